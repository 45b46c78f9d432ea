"""Simulated SMLM recordings with ground truth: layouts, blinking, camera noise, KDE targets.

Every frame draws its active emitters afresh from a fixed structure (a uniform field, a disc, or
sites along lines, filaments, clusters and rings), so a stack shows the structure over time as real
blinking data does. Photons per emitter are drawn log-uniformly from a range; background and PSF
width per frame from ranges (a scalar means a fixed value). Positions are in nm in the package
convention (origin at the top-left corner of the top-left pixel, x along columns).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from .camera import PRESETS, Camera
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


def apply_camera_noise(
    expected_photons: np.ndarray, camera: Camera, rng: np.random.Generator
) -> np.ndarray:
    """Shot noise, EM amplification (gamma, excess factor sqrt 2), read noise; ADU as uint16."""
    electrons = rng.poisson(expected_photons * camera.quantum_efficiency).astype(np.float64)
    if camera.is_emccd:
        positive = electrons > 0
        electrons[positive] = rng.gamma(electrons[positive], camera.em_gain)
    electrons += rng.normal(0.0, camera.read_noise, electrons.shape)
    adu = np.rint(electrons / camera.sensitivity + camera.baseline)
    return np.clip(adu, 0, np.iinfo(np.uint16).max).astype(np.uint16)


@dataclass
class SimulatedFrame:
    """One simulated frame: ADU image, ground truth, KDE target and its conditions."""

    adu: np.ndarray
    truth: pd.DataFrame
    kde: np.ndarray | None
    psf_sigma_px: float
    background: float
    expected: np.ndarray


def simulate_frames(
    n_frames: int, config: SimulationConfig, seed: int | None = 0, with_kde: bool = True
) -> Iterator[SimulatedFrame]:
    """Generate frames one by one (memory does not grow with ``n_frames``)."""
    rng = np.random.default_rng(seed)
    rows, cols = config.size
    px = config.camera.pixel_size
    margin = config.margin_px * px
    structure = Structure(config.layout, (-margin, -margin, cols * px + margin, rows * px + margin),
                          rng)
    for index in range(n_frames):
        n = rng.poisson(draw(config.density, rng) * structure.area_um2)
        x_nm, y_nm = structure.sample(n, rng)
        photons = draw_many(config.photons, rng, n, log=True)
        sigma = draw(config.psf_sigma_px, rng)
        background = draw(config.background, rng)
        expected = expected_image((rows, cols), x_nm / px, y_nm / px, photons, sigma, background)
        adu = apply_camera_noise(expected, config.camera, rng)
        inside = (x_nm >= 0) & (x_nm < cols * px) & (y_nm >= 0) & (y_nm < rows * px)
        truth = pd.DataFrame(
            {
                "frame": np.full(int(inside.sum()), index, dtype=np.int64),
                "x_nm": x_nm[inside],
                "y_nm": y_nm[inside],
                "photons": photons[inside],
            }
        )
        kde = (
            render_kde(x_nm, y_nm, config.kde_shape, config.fine_pixel_nm, config.kde_sigma_px)
            if with_kde
            else None
        )
        yield SimulatedFrame(adu, truth, kde, sigma, background, expected)


@dataclass
class SimulatedStack:
    """A simulated recording: frames (ADU, uint16), the truth table, and optional KDE targets."""

    frames: np.ndarray
    truth: pd.DataFrame
    kdes: np.ndarray | None
    config: SimulationConfig
    seed: int | None


def simulate_stack(
    n_frames: int, config: SimulationConfig, seed: int | None = 0, with_kde: bool = False
) -> SimulatedStack:
    """Simulate a whole stack in memory (for tests, sample data and benchmarks)."""
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    frames, truths, kdes = [], [], []
    for frame in simulate_frames(n_frames, config, seed, with_kde):
        frames.append(frame.adu)
        truths.append(frame.truth)
        if with_kde:
            kdes.append(frame.kde)
    return SimulatedStack(
        frames=np.stack(frames),
        truth=pd.concat(truths, ignore_index=True),
        kdes=np.stack(kdes) if with_kde else None,
        config=config,
        seed=seed,
    )
