"""Simulated SMLM recordings with ground truth: layouts, blinking, camera noise, KDE targets.

Emitters sit on a fixed structure (a uniform field, a disc, or sites along lines, filaments,
clusters and rings). Without ``blinking`` every frame draws its active emitters afresh from the
structure with photons drawn log-uniformly from a range. With ``blinking`` (:mod:`.blinking`) a
fixed set of fluorophores is labelled once; each switches on and off in continuous time, may
bleach, has its own brightness (drawn once from the photon range) with a frame-to-frame spread,
and gives a frame photons in proportion to the time it was on in that frame. Background and PSF
width per frame come from ranges (a scalar means a fixed value). Optional: sCMOS per-pixel offset
and read-noise maps, and a smooth stage drift. Positions are in nm in the package convention
(origin at the top-left corner of the top-left pixel, x along columns).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .blinking import Blinking, BlinkingTrajectories
from .camera import PRESETS, Camera
from .camera_noise import PixelMaps, apply_camera_noise, draw_pixel_maps
from .kde import DEFAULT_KDE_SIGMA_PX, render_kde
from .psf import expected_image

Range = float | tuple[float, float]
LAYOUTS = ("uniform", "disc", "lines", "filaments", "clusters", "rings", "mixed")
SITE_SPACING_NM = 2.0
LABEL_JITTER_NM = 5.0


def draw(value: Range, rng: np.random.Generator, log: bool = False) -> float:
    """Draw a number from a range (uniform, or log-uniform); a scalar is returned unchanged."""
    if np.isscalar(value):
        return float(value)
    low, high = (float(v) for v in value)
    if log:
        return float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(rng.uniform(low, high))


def draw_many(value: Range, rng: np.random.Generator, n: int, log: bool = False) -> np.ndarray:
    """Draw ``n`` numbers from a range (uniform or log-uniform), or repeat a scalar."""
    if np.isscalar(value):
        return np.full(n, float(value))
    low, high = (float(v) for v in value)
    if log:
        return np.exp(rng.uniform(np.log(low), np.log(high), n))
    return rng.uniform(low, high, n)


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    size : (rows, cols)
        Frame size in camera pixels.
    density : float or (low, high)
        Active emitters per um^2 per frame.
    photons : float or (low, high)
        Photons per emitter per frame (drawn log-uniformly from a range).
    background : float or (low, high)
        Background photons per pixel (per frame).
    psf_sigma_px : float or (low, high)
        PSF standard deviation in camera pixels (per frame).
    camera : Camera
        Camera model (noise, gain, pixel size).
    layout : str
        One of ``LAYOUTS``.
    upsampling : int
        KDE grid factor.
    kde_sigma_px : float
        KDE kernel width in fine pixels.
    margin_px : float
        Emitters are also placed this far outside the frame (they leak light in) but are not in
        the ground-truth table.
    blinking : Blinking, optional
        Switching kinetics; ``density`` is then the mean density of fluorophores that are on at
        the start (steady state), and ``photons`` the range of their brightness per full frame.
    offset_spread_adu : float
        Standard deviation of the per-pixel offset around the camera baseline (sCMOS), ADU.
    read_noise_spread : float
        Log-normal spread of the per-pixel read noise around the camera's read noise (sCMOS).
    drift_nm : float
        Largest excursion of a smooth random stage drift over the stack, nm (0: none).
    kde_min_snr : float
        Emitters below this signal-to-noise ratio, N / sqrt(N + 4 pi s^2 b) (N photons, PSF
        sigma s in px, background b per px), are left out of the KDE target (they are in the
        truth table): training targets then ask only for what the data can show.
    """

    size: tuple[int, int] = (64, 64)
    density: Range = 1.0
    photons: Range = (1000.0, 5000.0)
    background: Range = 50.0
    psf_sigma_px: Range = 1.2
    camera: Camera = field(default_factory=lambda: PRESETS["sCMOS"])
    layout: str = "uniform"
    upsampling: int = 4
    kde_sigma_px: float = DEFAULT_KDE_SIGMA_PX
    margin_px: float = 2.0
    blinking: Blinking | None = None
    offset_spread_adu: float = 0.0
    read_noise_spread: float = 0.0
    drift_nm: float = 0.0
    kde_min_snr: float = 0.0

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; expected one of {LAYOUTS}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"frame size must be two positive integers, got {self.size}")
        for name in ("density", "photons", "background", "psf_sigma_px"):
            values = np.atleast_1d(np.asarray(getattr(self, name), dtype=float))
            if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values < 0):
                raise ValueError(f"{name} must be a number >= 0 or a (low, high) range")
        if np.min(np.atleast_1d(self.psf_sigma_px)) <= 0:
            raise ValueError("psf_sigma_px must be > 0")
        if self.upsampling < 1:
            raise ValueError("upsampling must be >= 1")
        for name in ("offset_spread_adu", "read_noise_spread", "drift_nm", "kde_min_snr"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value}")

    @property
    def fine_pixel_nm(self) -> float:
        """KDE pixel size in nm."""
        return self.camera.pixel_size / self.upsampling

    @property
    def kde_shape(self) -> tuple[int, int]:
        """KDE grid size."""
        return (self.size[0] * self.upsampling, self.size[1] * self.upsampling)

    def with_values(self, **changes) -> SimulationConfig:
        """Return a copy with some fields changed."""
        return replace(self, **changes)


class Structure:
    """Where emitters can sit: a uniform region or a pool of sites along a structure."""

    def __init__(self, layout: str, box_nm: tuple[float, float, float, float], rng):
        self.layout = layout
        self.box = box_nm  # x0, y0, x1, y1
        uniform = layout in ("uniform", "disc")
        self.sites = None if uniform else _structure_sites(layout, box_nm, rng)

    @property
    def area_um2(self) -> float:
        """Area of the box in um^2."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0) * 1e-6

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw positions of ``n`` active emitters (nm)."""
        x0, y0, x1, y1 = self.box
        if self.layout == "uniform":
            return rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
        if self.layout == "disc":
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            radius = 0.45 * min(x1 - x0, y1 - y0)
            r = radius * np.sqrt(rng.uniform(0, 1, n))
            phi = rng.uniform(0, 2 * np.pi, n)
            return cx + r * np.cos(phi), cy + r * np.sin(phi)
        picked = self.sites[rng.integers(0, len(self.sites), n)]
        jitter = rng.normal(0, LABEL_JITTER_NM, (n, 2))
        return picked[:, 0] + jitter[:, 0], picked[:, 1] + jitter[:, 1]


def _polyline_sites(points: np.ndarray) -> np.ndarray:
    """Points every SITE_SPACING_NM along a polyline."""
    seg = np.diff(points, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    s = np.arange(0.0, arc[-1], SITE_SPACING_NM)
    return np.stack([np.interp(s, arc, points[:, 0]), np.interp(s, arc, points[:, 1])], axis=1)


def _filament(box, rng, straight: bool) -> np.ndarray:
    x0, y0, x1, y1 = box
    start = np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])
    heading = rng.uniform(0, 2 * np.pi)
    length = 2.0 * math.hypot(x1 - x0, y1 - y0)
    step = 20.0
    n = int(length / step)
    turn = 0.0 if straight else rng.uniform(0.02, 0.08)
    headings = heading + np.cumsum(rng.normal(0, turn, n))
    path = np.cumsum(step * np.stack([np.cos(headings), np.sin(headings)], axis=1), axis=0)
    path = np.concatenate([[np.zeros(2)], path])
    path -= path[n // 2]  # the start point lies mid-filament, so the filament crosses the field
    return _polyline_sites(path + start)


def _structure_sites(layout: str, box, rng: np.random.Generator) -> np.ndarray:
    x0, y0, x1, y1 = box
    area_um2 = (x1 - x0) * (y1 - y0) * 1e-6
    parts = []
    if layout in ("lines", "filaments", "mixed"):
        for _ in range(int(rng.integers(2, 6))):
            parts.append(_filament(box, rng, straight=layout == "lines"))
    if layout in ("clusters", "mixed"):
        for _ in range(max(1, int(rng.poisson(1.0 * area_um2)))):
            centre = rng.uniform((x0, y0), (x1, y1))
            spread = rng.uniform(20.0, 80.0)
            parts.append(centre + rng.normal(0, spread, (int(rng.integers(200, 1500)), 2)))
    if layout in ("rings", "mixed"):
        for _ in range(max(1, int(rng.poisson(0.6 * area_um2)))):
            centre = rng.uniform((x0, y0), (x1, y1))
            radius = rng.uniform(60.0, 250.0)
            phi = np.arange(0, 2 * np.pi, SITE_SPACING_NM / radius)
            parts.append(centre + radius * np.stack([np.cos(phi), np.sin(phi)], axis=1))
    sites = np.concatenate(parts)
    inside = (sites[:, 0] >= x0) & (sites[:, 0] < x1) & (sites[:, 1] >= y0) & (sites[:, 1] < y1)
    return sites[inside]


def drift_trajectory(n_frames: int, max_excursion_nm: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Smooth random stage drift, shape (n_frames, 2) as (x, y) in nm, zero at the first frame.

    Each axis is a ramp plus three slow sinusoids with random amplitudes and phases; the whole
    curve is scaled so that its largest distance from the start is ``max_excursion_nm``.
    """
    t = np.linspace(0.0, 1.0, n_frames)[:, None]
    ramp = rng.normal(0.0, 1.0, (1, 2)) * t
    waves = sum(rng.normal(0.0, 1.0 / k, (1, 2)) * np.sin(np.pi * k * t + rng.uniform(0, 2 * np.pi,
                                                                                     (1, 2)))
                for k in (1, 2, 3))
    curve = ramp + waves
    curve -= curve[0]
    largest = np.max(np.hypot(curve[:, 0], curve[:, 1]))
    return curve * (max_excursion_nm / largest) if largest > 0 else curve


def signal_to_noise(photons: np.ndarray, psf_sigma_px: float, background: float) -> np.ndarray:
    """Spot signal-to-noise ratio N / sqrt(N + 4 pi s^2 b) (s in px, b photons per px)."""
    photons = np.asarray(photons, dtype=np.float64)
    return photons / np.sqrt(photons + 4 * np.pi * psf_sigma_px**2 * background + 1e-12)


def detectable_truth(truth: pd.DataFrame, psf_sigma_px: float, background: float,
                     min_snr: float) -> pd.DataFrame:
    """The emitters of a truth table at or above ``min_snr`` (:func:`signal_to_noise`).

    A blinking fluorophore on for a sliver of a frame gives a few photons no method can see:
    benchmarks and quality floors score on the emitters above the training targets' SNR floor."""
    snr = signal_to_noise(truth["photons"].to_numpy(), psf_sigma_px, background)
    return truth[snr >= min_snr].reset_index(drop=True)


class FreshEmitters:
    """Every frame draws its active emitters afresh from the structure (no memory)."""

    def __init__(self, config: SimulationConfig, structure: Structure):
        self.config, self.structure = config, structure

    def next_frame(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x_nm, y_nm, photons, emitter id or None) of the emitters on in the next frame."""
        n = rng.poisson(draw(self.config.density, rng) * self.structure.area_um2)
        x_nm, y_nm = self.structure.sample(n, rng)
        return x_nm, y_nm, draw_many(self.config.photons, rng, n, log=True), None


class BlinkingEmitters:
    """A fixed set of labelled fluorophores switching with the configured kinetics."""

    def __init__(self, config: SimulationConfig, structure: Structure, rng: np.random.Generator):
        kinetics = config.blinking
        labels = draw(config.density, rng) * structure.area_um2 / kinetics.duty_cycle
        n = rng.poisson(labels)
        self.x_nm, self.y_nm = structure.sample(n, rng)
        self.brightness = draw_many(config.photons, rng, n, log=True)
        self.spread = kinetics.photon_spread
        self.trajectories = BlinkingTrajectories(n, kinetics, rng)

    def next_frame(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(x_nm, y_nm, photons, emitter id) of the fluorophores on during the next frame."""
        on_fraction = self.trajectories.next_frame()
        ids = np.flatnonzero(on_fraction > 0)
        fluctuation = np.exp(rng.normal(-0.5 * self.spread**2, self.spread, ids.size))
        photons = self.brightness[ids] * on_fraction[ids] * fluctuation
        return self.x_nm[ids], self.y_nm[ids], photons, ids


@dataclass
class SimulatedFrame:
    """One simulated frame: ADU image, ground truth, KDE target and its conditions."""

    adu: np.ndarray
    truth: pd.DataFrame
    kde: np.ndarray | None
    psf_sigma_px: float
    background: float
    expected: np.ndarray
    drift_nm: tuple[float, float] = (0.0, 0.0)
    pixel_maps: PixelMaps | None = None


def simulate_frames(
    n_frames: int, config: SimulationConfig, seed: int | None = 0, with_kde: bool = True
) -> Iterator[SimulatedFrame]:
    """Generate frames one by one (memory does not grow with ``n_frames``).

    Truth positions are where the emitters appear on the camera (drift included); with drift the
    table also has ``drift_x_nm``/``drift_y_nm``, with blinking an ``emitter`` id.
    """
    rng = np.random.default_rng(seed)
    rows, cols = config.size
    px = config.camera.pixel_size
    margin = config.margin_px * px
    structure = Structure(config.layout, (-margin, -margin, cols * px + margin, rows * px + margin),
                          rng)
    emitters = (FreshEmitters(config, structure) if config.blinking is None
                else BlinkingEmitters(config, structure, rng))
    maps = draw_pixel_maps(config.camera, config.size, config.offset_spread_adu,
                           config.read_noise_spread, rng)
    drift = drift_trajectory(n_frames, config.drift_nm, rng) if config.drift_nm > 0 else None
    for index in range(n_frames):
        x_nm, y_nm, photons, ids = emitters.next_frame(rng)
        if drift is not None:
            x_nm, y_nm = x_nm + drift[index, 0], y_nm + drift[index, 1]
        sigma = draw(config.psf_sigma_px, rng)
        background = draw(config.background, rng)
        expected = expected_image((rows, cols), x_nm / px, y_nm / px, photons, sigma, background)
        adu = apply_camera_noise(expected, config.camera, rng, maps)
        inside = (x_nm >= 0) & (x_nm < cols * px) & (y_nm >= 0) & (y_nm < rows * px)
        columns = {
            "frame": np.full(int(inside.sum()), index, dtype=np.int64),
            "x_nm": x_nm[inside],
            "y_nm": y_nm[inside],
            "photons": photons[inside],
        }
        if ids is not None:
            columns["emitter"] = ids[inside]
        shift = (0.0, 0.0) if drift is None else (float(drift[index, 0]), float(drift[index, 1]))
        if drift is not None:
            columns["drift_x_nm"] = np.full(int(inside.sum()), shift[0])
            columns["drift_y_nm"] = np.full(int(inside.sum()), shift[1])
        kde = None
        if with_kde:
            shown = signal_to_noise(photons, sigma, background) >= config.kde_min_snr
            kde = render_kde(x_nm[shown], y_nm[shown], config.kde_shape, config.fine_pixel_nm,
                             config.kde_sigma_px)
        yield SimulatedFrame(adu, pd.DataFrame(columns), kde, sigma, background, expected, shift,
                             maps)


@dataclass
class SimulatedStack:
    """A simulated recording: frames (ADU, uint16), the truth table, and optional KDE targets."""

    frames: np.ndarray
    truth: pd.DataFrame
    kdes: np.ndarray | None
    config: SimulationConfig
    seed: int | None
    drift_nm: np.ndarray | None = None
    pixel_maps: PixelMaps | None = None


def simulate_stack(
    n_frames: int, config: SimulationConfig, seed: int | None = 0, with_kde: bool = False
) -> SimulatedStack:
    """Simulate a whole stack in memory (for tests, sample data and benchmarks)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    frames, truths, kdes, drift = [], [], [], []
    for frame in simulate_frames(n_frames, config, seed, with_kde):
        frames.append(frame.adu)
        truths.append(frame.truth)
        drift.append(frame.drift_nm)
        if with_kde:
            kdes.append(frame.kde)
    return SimulatedStack(
        frames=np.stack(frames),
        truth=pd.concat(truths, ignore_index=True),
        kdes=np.stack(kdes) if with_kde else None,
        config=config,
        seed=seed,
        drift_nm=np.array(drift) if config.drift_nm > 0 else None,
        pixel_maps=frame.pixel_maps,
    )
