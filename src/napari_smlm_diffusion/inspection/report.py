"""Inspect a raw stack: camera, PSF, background, photons and density estimated from the data."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import erf
from scipy.stats import chi2

from ..camera import Camera
from ..errors import InputError
from .photon_transfer import SKEW_BASELINE_SE_ADU, PhotonTransfer, PhotonTransferError
from .spot_transfer import measure_camera
from .spots import (
    FrameDetection,
    aperture_sums,
    brightest_isolated,
    detect,
    fit_spot,
    isolated,
    windows,
)

DEFAULT_FRAMES = 200
MAX_FIELD_PX = 512
PIXEL_BUDGET = 2**22  # pixels read at most (about 0.5 GB of working memory)
MIN_FRAMES = 10
MIN_SIZE_PX = 16
MIN_ISOLATED_SPOTS = 10
SATURATED_FRAME_FRACTION = 0.01
SINGLE_SPOT_P = 1e-3
N_BOOTSTRAP = 200
REPORT_KEYS = ("baseline_adu", "sensitivity_e_per_adu", "read_noise_e", "psf_sigma_nm",
               "photons_median", "background_median_photons", "density_per_um2")


class InspectionError(InputError):
    """The stack cannot be inspected (one line saying why and what was expected)."""


@dataclass
class InspectionReport:
    """Estimates from the data alone, each with a standard error (``*_uncertainty``).

    ``sensitivity_e_per_adu`` assumes the EM gain of the given camera (an EMCCD's excess noise
    is accounted for when it is > 1); photons use its quantum efficiency.
    """

    baseline_adu: float
    sensitivity_e_per_adu: float
    read_noise_e: float
    psf_sigma_nm: float
    photons_median: float
    background_median_photons: float
    density_per_um2: float
    baseline_adu_uncertainty: float
    sensitivity_e_per_adu_uncertainty: float
    read_noise_e_uncertainty: float
    psf_sigma_nm_uncertainty: float
    photons_median_uncertainty: float
    background_median_photons_uncertainty: float
    density_per_um2_uncertainty: float
    psf_sigma_px: float
    photons_quartiles: tuple[float, float]
    background_quartiles_photons: tuple[float, float]
    read_noise_from_data: bool
    n_frames: int
    n_background_values: int
    n_spots: int
    n_isolated_spots: int
    frames_with_spots: int
    camera: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def estimate(self, key: str) -> tuple[float, float]:
        """(value, standard error) of one of ``REPORT_KEYS``."""
        return getattr(self, key), getattr(self, f"{key}_uncertainty")

    def to_dict(self) -> dict:
        """Plain dict (JSON types; NaN becomes None)."""
        def clean(value):
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            return value

        return clean(asdict(self))

    def to_json(self) -> str:
        """JSON text of :meth:`to_dict` (indented)."""
        return json.dumps(self.to_dict(), indent=2)


def sample_indices(n_total: int, n_frames: int) -> np.ndarray:
    """Up to ``n_frames`` frame indices spread evenly over a stack of ``n_total`` frames."""
    return np.unique(np.linspace(0, n_total - 1, min(n_total, n_frames)).round().astype(int))


def read_sample(data, n_frames: int = DEFAULT_FRAMES) -> tuple[np.ndarray, list[str]]:
    """Read frames spread over a (lazy) stack, and notes on what was read.

    Frames larger than ``MAX_FIELD_PX`` squared are cropped to their centre, and at most
    ``PIXEL_BUDGET`` pixels are read (fewer frames of large fields), so memory stays bounded.
    """
    shape = tuple(getattr(data, "shape", ()))
    if len(shape) != 3:
        raise InspectionError(f"expected a stack of frames (frames, rows, cols), got shape {shape}")
    if shape[0] < MIN_FRAMES:
        raise InspectionError(
            f"the stack has {shape[0]} frame{'s' if shape[0] != 1 else ''}: photon transfer "
            f"needs at least {MIN_FRAMES} frames of the same camera")
    if min(shape[1:]) < MIN_SIZE_PX:
        raise InspectionError(
            f"frames of {shape[1]}x{shape[2]} pixels are too small for spot statistics; "
            f"expected at least {MIN_SIZE_PX}x{MIN_SIZE_PX}")
    rows, cols = (min(n, MAX_FIELD_PX) for n in shape[1:])
    r0, c0 = (shape[1] - rows) // 2, (shape[2] - cols) // 2
    n_read = min(max(n_frames, MIN_FRAMES), max(MIN_FRAMES, PIXEL_BUDGET // (rows * cols)))
    indices = sample_indices(shape[0], n_read)
    notes = []
    if (rows, cols) != shape[1:]:
        notes.append(f"the central {rows}x{cols} pixels of the {shape[1]}x{shape[2]} frames "
                     "were inspected")
    if len(indices) < min(n_frames, shape[0]):
        notes.append(f"{len(indices)} frames were read (the pixel budget of the inspection)")
    chunks = [np.asarray(data[indices[i:i + 16], r0:r0 + rows, c0:c0 + cols])
              for i in range(0, len(indices), 16)]
    return np.concatenate(chunks), notes


def saturation_level(dtype: np.dtype) -> float:
    """Counts at which an integer camera saturates (inf for float data)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else math.inf


def _usable_frames(raw: np.ndarray, notes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Float frames without the saturated ones, and the saturated-pixel mask."""
    saturated = raw >= saturation_level(raw.dtype)
    bad = saturated.mean(axis=(1, 2)) > SATURATED_FRAME_FRACTION
    if len(raw) - bad.sum() < MIN_FRAMES:
        raise InspectionError(
            f"{int(bad.sum())} of {len(raw)} sampled frames are saturated (more than "
            f"{100 * SATURATED_FRAME_FRACTION:g} % of their pixels at "
            f"{saturation_level(raw.dtype):g} ADU): lower the exposure or the EM gain")
    if bad.any():
        notes.append(f"{int(bad.sum())} of {len(raw)} sampled frames are saturated and were "
                     "left out")
    return raw[~bad].astype(np.float64), saturated[~bad]


def _boot_se(values: np.ndarray, stat, rng: np.random.Generator) -> float:
    """Bootstrap standard error of ``stat(values)``."""
    picks = rng.integers(0, len(values), (N_BOOTSTRAP, len(values)))
    return float(np.std([stat(values[p]) for p in picks]))


def _psf_width(frames: np.ndarray, det: FrameDetection, noise_sd: np.ndarray,
               keep: np.ndarray, expected_sd: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Fitted PSF sigmas (px) of the brightest isolated spots whose residuals fit the noise
    model (a chi-square test leaves out pairs of molecules seen as one, which look wider).

    Each spot is fitted first with the background's noise ``noise_sd``, then again with every
    pixel's own noise at its fitted level (``expected_sd``: the spot's shot noise included,
    which dominates on a dim background), and tested with the latter."""
    spots = brightest_isolated(det, keep)
    sigmas = []
    for window, sd in zip(windows(frames, spots), windows(noise_sd, spots), strict=True):
        fit = fit_spot(window, sd)
        if fit is not None:
            fit = fit_spot(window, expected_sd(fit.model))
        if fit is None:
            continue
        sd = expected_sd(fit.model)
        if chi2.sf(np.sum(((fit.model - window) / sd) ** 2), window.size - 5) > SINGLE_SPOT_P:
            sigmas.append(fit.sigma)
    return np.array(sigmas)


def _photometry(frames: np.ndarray, spots: np.ndarray, sigma_px: float) -> np.ndarray:
    """Background-subtracted ADU of isolated spots in apertures of +-3 sigma, corrected for the
    light outside the aperture."""
    half = max(2, math.ceil(3 * sigma_px))
    margin = half + 1
    rows, cols = frames.shape[1:]
    inside = ((spots[:, 1] >= margin) & (spots[:, 1] < rows - margin)
              & (spots[:, 2] >= margin) & (spots[:, 2] < cols - margin))
    if np.count_nonzero(inside) < MIN_ISOLATED_SPOTS:
        raise InspectionError(
            f"only {np.count_nonzero(inside)} isolated spots lie {margin} pixels or more from "
            f"the edges of the {rows}x{cols} frames (need {MIN_ISOLATED_SPOTS}) for the photon "
            "counts: use more frames or a larger field of view")
    fraction = erf((half + 0.5) / (math.sqrt(2) * sigma_px)) ** 2
    return aperture_sums(frames, spots[inside], half) / fraction


def _measured_width(sigmas: np.ndarray, n_frames: int, shape: tuple[int, ...],
                    rng: np.random.Generator) -> tuple[float, float]:
    """Median PSF sigma (px) of the isolated spots and its bootstrap standard error."""
    if len(sigmas) < MIN_ISOLATED_SPOTS:
        raise InspectionError(
            f"only {len(sigmas)} isolated bright spot{'' if len(sigmas) == 1 else 's'} found "
            f"in {n_frames} frames of "
            f"{shape[0]}x{shape[1]} pixels (need {MIN_ISOLATED_SPOTS}) for the PSF width: use "
            "more frames or a larger field of view")
    return float(np.median(sigmas)), _boot_se(sigmas, np.median, rng)


def inspect_stack(data, camera: Camera, n_frames: int = DEFAULT_FRAMES,
                  seed: int = 0, camera_known: bool = False,
                  psf_sigma_nm: float | None = None) -> InspectionReport:
    """Estimate camera, PSF, background, photons and density from a raw stack (ADU).

    Parameters
    ----------
    data : array-like (frames, rows, cols)
        Raw frames in ADU (a :class:`~napari_smlm_diffusion.io.LazyStack` is read lazily).
    camera : Camera
        The given settings: its EM gain (and hence excess noise), quantum efficiency and pixel
        size are used to express the estimates; its read noise is used for the baseline only
        when the data cannot measure it.
    n_frames : int
        At most this many frames, spread over the stack, are read (fewer when the frames are
        large; frames larger than 512 x 512 are cropped to their centre).
    seed : int
        Seed of the bootstraps.
    camera_known : bool
        Take the camera's baseline, sensitivity and read noise as given (from the file's
        metadata or the user) instead of measuring them; photons, background, PSF and density
        are still measured.
    psf_sigma_nm : float, optional
        The known PSF sigma: used for the photometry instead of measuring it on isolated spots
        (which very bright spots, far from a Gaussian at their photon counts, may fail).

    Raises
    ------
    InspectionError
        Too few frames, frames too small, saturated frames, no background or too few spots.
    """
    raw, notes = read_sample(data, n_frames)
    frames, saturated = _usable_frames(raw, notes)
    integer = raw.dtype.kind in "iu"
    first = detect(frames, saturated)
    if camera_known:
        pt, how = PhotonTransfer.of_camera(camera), ["camera values as given, not measured"]
    else:
        try:
            pt, how = measure_camera(frames, first, camera, integer, seed)
        except PhotonTransferError as error:
            raise InspectionError(str(error)) from None
    notes += how
    if not (pt.read_noise_from_data or pt.single_level or camera_known):
        notes.append("the skewness of the background does not pin the read noise down to "
                     f"{SKEW_BASELINE_SE_ADU:g} ADU of baseline: the baseline uses the given read "
                     f"noise ({camera.read_noise:g} e-)")
    gain = camera.excess_noise**2 * camera.em_gain
    sensitivity = gain / pt.slope
    photons_per_adu = camera.excess_noise**2 / (pt.slope * camera.quantum_efficiency)
    read_noise = math.sqrt(max(pt.read_var, 0.0)) * sensitivity
    if pt.read_noise_disagrees:
        notes.append(
            f"the background is {'noisier' if read_noise > camera.read_noise else 'less noisy'} "
            f"than the given read noise ({camera.read_noise:g} e-) explains: the baseline uses "
            "the read noise measured from the data")
    read_noise_se = (pt.read_var_se / (2 * math.sqrt(max(pt.read_var, pt.read_var_se, 1e-12)))
                     * sensitivity if math.isfinite(pt.read_var_se) else math.inf)
    if read_noise_se > camera.read_noise and not camera_known:
        # Less certain than the value itself (an EMCCD's read noise under its shot noise): not
        # measured, the given value stands, as it does in the baseline.
        read_noise, read_noise_se = camera.read_noise, math.inf

    det = detect(frames, saturated, first.background, pt.expected_sd(first.background))
    noise_sd = pt.expected_sd(det.background)
    shape = frames.shape[1:]
    keep = isolated(det.spots, shape)
    rng = np.random.default_rng(seed)
    if psf_sigma_nm is not None:
        sigmas = np.zeros(0)
        sigma_px, sigma_se = psf_sigma_nm / camera.pixel_size, 0.0
        notes.append("PSF sigma as given, not measured")
    else:
        sigmas = _psf_width(frames, det, noise_sd, keep, pt.expected_sd)
        sigma_px, sigma_se = _measured_width(sigmas, len(frames), shape, rng)

    photons = _photometry(frames, det.spots[keep], sigma_px) * photons_per_adu
    levels = np.array([np.median(f[~m]) for f, m in zip(frames, det.signal_mask, strict=True)])
    background = (levels - pt.baseline) * photons_per_adu
    background_se = math.hypot(_boot_se(background, np.median, rng),
                               pt.baseline_se * photons_per_adu)
    counts = np.bincount(det.spots[:, 0], minlength=len(frames))
    area_um2 = shape[0] * shape[1] * (camera.pixel_size * 1e-3) ** 2
    return InspectionReport(
        baseline_adu=pt.baseline,
        sensitivity_e_per_adu=sensitivity,
        read_noise_e=read_noise,
        psf_sigma_nm=sigma_px * camera.pixel_size,
        photons_median=float(np.median(photons)),
        background_median_photons=float(np.median(background)),
        density_per_um2=float(counts.mean() / area_um2),
        baseline_adu_uncertainty=pt.baseline_se,
        sensitivity_e_per_adu_uncertainty=sensitivity * pt.slope_se / pt.slope,
        read_noise_e_uncertainty=read_noise_se,
        psf_sigma_nm_uncertainty=sigma_se * camera.pixel_size,
        photons_median_uncertainty=_boot_se(photons, np.median, rng),
        background_median_photons_uncertainty=background_se,
        density_per_um2_uncertainty=float(counts.std(ddof=1) / math.sqrt(len(counts))
                                          / area_um2),
        psf_sigma_px=sigma_px,
        photons_quartiles=tuple(float(q) for q in np.percentile(photons, [25, 75])),
        background_quartiles_photons=tuple(float(q) for q in np.percentile(background,
                                                                          [25, 75])),
        read_noise_from_data=pt.read_noise_from_data,
        n_frames=len(frames),
        n_background_values=pt.n_pixels,
        n_spots=len(det.spots),
        n_isolated_spots=len(sigmas),
        frames_with_spots=int(np.count_nonzero(counts)),
        camera=camera.to_dict(),
        notes=notes,
    )
