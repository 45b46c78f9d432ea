"""Warnings: settings far from the data, conditions outside the models' training ranges,
implausible PSF widths, and jobs that found nothing although the frames have spots."""

from __future__ import annotations

import math

import numpy as np

from ..camera import Camera
from .photon_transfer import PhotonTransferError
from .report import MIN_FRAMES, InspectionReport, saturation_level
from .spot_transfer import measure_camera
from .spots import FrameDetection, detect

RANGE_KEYS = ("pixel_size_nm", "psf_sigma_px", "photons", "background")
SENSITIVITY_FACTOR = 2.0
PSF_PX_LIMITS = (0.5, 4.0)
PSF_NM_LIMITS = (50.0, 400.0)
PSF_MISMATCH = 0.25
JOB_SAMPLE_FRAMES = 50  # frames of a job checked when it starts and ends
CLEAR_SPOT_Z = 8.0  # smoothed, noise-normalised peak height of a spot "clearly above background"


def training_ranges(weights: str | None = None) -> dict[str, tuple[float, float]]:
    """Training ranges (``pixel_size_nm``, ``psf_sigma_px``, ``photons``, ``background``) from
    the model card of the KDE CNN (the shipped one by default, or a ``.safetensors`` path)."""
    from ..model_cards import parse_kde_cnn_card
    from ..pretrained import read_model_card, resolve_weights
    from ..weights import KDE_CNN_NAME

    _, card_path = resolve_weights(weights or KDE_CNN_NAME)
    return ranges_of(parse_kde_cnn_card(read_model_card(card_path), card_path).training_ranges)


def ranges_of(ranges) -> dict[str, tuple[float, float]]:
    """The checked ranges of a card's :class:`model_cards.TrainingRanges` as a dict."""
    return {key: getattr(ranges, key) for key in RANGE_KEYS}


def _outside(name: str, value: float, unit: str, key: str, ranges: dict) -> list[str]:
    if key not in ranges or not math.isfinite(value):
        return []
    low, high = ranges[key]
    if low <= value <= high:
        return []
    return [f"{name} {value:.3g}{unit} is outside the {low:g}-{high:g}{unit} the KDE CNN was "
            "trained on: its output is not validated for these data"]


def psf_warnings(psf_sigma_nm: float, pixel_size_nm: float) -> list[str]:
    """Warnings for a PSF width that no fluorescence microscope produces."""
    sigma_px = psf_sigma_nm / pixel_size_nm
    out = []
    low, high = PSF_PX_LIMITS
    if not low <= sigma_px <= high:
        out.append(f"PSF sigma {psf_sigma_nm:g} nm is {sigma_px:.2g} camera pixels of "
                   f"{pixel_size_nm:g} nm: implausible (expected {low:g}-{high:g} pixels); "
                   "check the pixel size and the PSF width")
    low, high = PSF_NM_LIMITS
    if not low <= psf_sigma_nm <= high:
        out.append(f"PSF sigma {psf_sigma_nm:g} nm is implausible for a fluorescence microscope "
                   f"(expected {low:g}-{high:g} nm); check the unit (nm) and the value")
    return out


def condition_warnings(ranges: dict, pixel_size_nm: float, psf_sigma_px: float,
                       photons: float = math.nan, background: float = math.nan) -> list[str]:
    """Warnings for conditions outside the training ranges (NaN values are not checked)."""
    return (_outside("pixel size", pixel_size_nm, " nm", "pixel_size_nm", ranges)
            + _outside("PSF sigma", psf_sigma_px, " px", "psf_sigma_px", ranges)
            + _outside("median photons per spot", photons, "", "photons", ranges)
            + _outside("background", background, " photons/px", "background", ranges))


def camera_warnings(camera: Camera, sensitivity: float, sensitivity_se: float,
                    dark_level: float, dark_level_se: float) -> list[str]:
    """Warnings for a sensitivity or baseline far from the estimates from the data (the dark
    level is only compared when the sensitivity agrees: its estimate assumes the camera type)."""
    factor = camera.sensitivity / sensitivity
    if not 1 / SENSITIVITY_FACTOR <= factor <= SENSITIVITY_FACTOR:
        return [
            f"camera sensitivity {camera.sensitivity:g} e-/ADU is {max(factor, 1 / factor):.1f}x "
            f"{'above' if factor > 1 else 'below'} the {sensitivity:.3g} ± {sensitivity_se:.2g} "
            f"e-/ADU measured from the data at EM gain {camera.em_gain:g}: check the camera "
            "preset (sCMOS or EMCCD), the EM gain and the sensitivity"]
    out = []
    tolerance = max(2.0, 3.0 * dark_level_se)
    if camera.baseline > dark_level + tolerance:
        out.append(
            f"camera baseline {camera.baseline:g} ADU is above the dark level "
            f"{dark_level:.1f} ± {dark_level_se:.1f} ADU measured from the data: dim signal "
            f"would be cut off; use a baseline of about {dark_level:.0f} ADU")
    return out


def check_settings(report: InspectionReport, camera: Camera, psf_sigma_nm: float | None,
                   training_ranges: dict) -> list[str]:
    """Compare the given settings with an inspection report and the training ranges.

    Parameters
    ----------
    report : InspectionReport
        Estimates from the data.
    camera : Camera
        The settings the jobs would use.
    psf_sigma_nm : float or None
        The PSF width setting (nm); None when not given.
    training_ranges : dict
        ``pixel_size_nm``, ``psf_sigma_px``, ``photons``, ``background``, each (low, high).
    """
    out = camera_warnings(camera, report.sensitivity_e_per_adu,
                          report.sensitivity_e_per_adu_uncertainty, report.baseline_adu,
                          report.baseline_adu_uncertainty)
    if psf_sigma_nm is not None:
        out += psf_warnings(psf_sigma_nm, camera.pixel_size)
        if abs(psf_sigma_nm / report.psf_sigma_nm - 1) > PSF_MISMATCH:
            out.append(f"PSF sigma {psf_sigma_nm:g} nm differs from the "
                       f"{report.psf_sigma_nm:.0f} ± {report.psf_sigma_nm_uncertainty:.0f} nm "
                       f"measured on {report.n_isolated_spots} isolated spots")
    out += psf_warnings(report.psf_sigma_nm, camera.pixel_size) if psf_sigma_nm is None else []
    out += condition_warnings(training_ranges, camera.pixel_size,
                              report.psf_sigma_nm / camera.pixel_size, report.photons_median,
                              report.background_median_photons)
    return out


def _detect_raw(frames: np.ndarray) -> FrameDetection:
    """Spots and background of raw frames, with the noise measured on each frame itself (so
    nothing depends on the camera settings)."""
    return detect(frames.astype(np.float64), frames >= saturation_level(frames.dtype))


def _no_molecule_message(det: FrameDetection) -> str | None:
    n = int(np.unique(det.spots[det.spot_z > CLEAR_SPOT_Z, 0]).size)
    if n == 0:
        return None
    return (f"no molecule found although {n} frame{'s' if n != 1 else ''} "
            f"ha{'ve' if n != 1 else 's'} spots clearly above background: check the camera "
            "settings")


def no_molecule_warning(frames: np.ndarray, n_localizations: int) -> str | None:
    """The warning after a job that found nothing although the frames (ADU, (frames, rows,
    cols)) have spots clearly above background (a local maximum of the smoothed,
    noise-normalised frame above ``CLEAR_SPOT_Z``)."""
    if n_localizations > 0:
        return None
    return _no_molecule_message(_detect_raw(np.asarray(frames)))


def job_sample(data, frames: range, count: int = JOB_SAMPLE_FRAMES) -> np.ndarray:
    """Up to ``count`` frames of a job (``data``: array-like (frames, rows, cols)), spread over
    its 0-based ``frames`` range: what :func:`job_warnings` and :func:`no_molecule_warning`
    look at."""
    count = min(count, len(frames))
    picks = sorted({frames[i] for i in np.linspace(0, len(frames) - 1, count).astype(int)})
    return np.stack([np.asarray(data[i]) for i in picks])


def job_warnings(frames_sample: np.ndarray, camera: Camera, psf_sigma_nm: float,
                 training_ranges: dict, n_localizations: int | None = None) -> list[str]:
    """Cheap checks when a job starts (and, with ``n_localizations``, after it ends).

    Parameters
    ----------
    frames_sample : array (frames, rows, cols)
        A few frames of the stack in ADU (a few dozen spread over the stack are enough).
    camera, psf_sigma_nm
        The settings of the job.
    training_ranges : dict
        See :func:`check_settings`.
    n_localizations : int, optional
        Localizations the job found; 0 triggers the "no molecule found" check.
    """
    frames = np.asarray(frames_sample)
    frames = frames[None] if frames.ndim == 2 else frames
    out = psf_warnings(psf_sigma_nm, camera.pixel_size)
    levels = np.median(frames, axis=(1, 2))
    # Dark (at or below the baseline) and saturated frames have their own warnings when read.
    lit = levels[(levels > camera.baseline) & (levels < saturation_level(frames.dtype))]
    background = float(np.median(camera.adu_to_photons(lit))) if lit.size else math.nan
    out += condition_warnings(training_ranges, camera.pixel_size,
                              psf_sigma_nm / camera.pixel_size, background=background)
    det = _detect_raw(frames)
    if len(frames) >= MIN_FRAMES:
        try:
            pt, _ = measure_camera(frames.astype(np.float64), det, camera,
                                   frames.dtype.kind in "iu")
        except PhotonTransferError:
            pt = None
        if pt is not None:
            sensitivity = camera.excess_noise**2 * camera.em_gain / pt.slope
            out += camera_warnings(camera, sensitivity, sensitivity * pt.slope_se / pt.slope,
                                   pt.baseline, pt.baseline_se)
    if n_localizations == 0:
        warning = _no_molecule_message(det)
        out += [warning] if warning else []
    return out
