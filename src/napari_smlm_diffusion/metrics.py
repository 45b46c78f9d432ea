"""Localization accuracy metrics: matching to ground truth, SMLM-challenge scores and FRC.

Localization tables are pandas DataFrames with columns ``frame`` (int, 0-based), ``x_nm`` and
``y_nm`` (nm, origin at the top-left corner of the top-left pixel, x along columns, y along
rows); uncertainty columns ``uncertainty_x_nm``, ``uncertainty_y_nm`` or ``uncertainty_nm``
(per-axis 1-sigma, nm) are optional.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.ndimage import uniform_filter1d
from scipy.signal.windows import tukey

from .matching import REQUIRED_COLUMNS, MatchResult, match_localizations, match_points, read_table

# Taper fraction of the Tukey window applied before the FRC Fourier transforms.
_TUKEY_ALPHA = 0.5

_LABELS = {
    "n_truth": "Ground-truth emitters",
    "n_locs": "Localizations",
    "tolerance_nm": "Matching tolerance [nm]",
    "tp": "True positives",
    "fp": "False positives",
    "fn": "False negatives",
    "jaccard": "Jaccard index [%]",
    "precision": "Precision [%]",
    "recall": "Recall [%]",
    "rmse_lateral_nm": "RMSE lateral [nm]",
    "rmse_x_nm": "RMSE x [nm]",
    "rmse_y_nm": "RMSE y [nm]",
    "efficiency": "Efficiency, lateral [%]",
    "calibration_x": "Calibration x [RMS error/sigma]",
    "calibration_y": "Calibration y [RMS error/sigma]",
    "frc_resolution_nm": "FRC resolution [nm]",
}


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def _percent(numerator: int, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator else 0.0


def uncertainty_calibration(
    dx: np.ndarray, dy: np.ndarray, sigma_x: np.ndarray, sigma_y: np.ndarray
) -> tuple[float, float]:
    """RMS of error / reported sigma per axis (1 for calibrated uncertainties).

    Parameters
    ----------
    dx, dy : array_like
        Localization errors, nm.
    sigma_x, sigma_y : array_like or float
        Reported 1-sigma uncertainties, nm; entries that are not finite and positive are ignored.

    Returns
    -------
    (float, float)
        Calibration ratio along x and y; NaN if no valid entries.
    """
    ratios = []
    for error, sigma in ((dx, sigma_x), (dy, sigma_y)):
        error, sigma = np.broadcast_arrays(
            np.asarray(error, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
        )
        valid = np.isfinite(sigma) & (sigma > 0)
        ratios.append(_rms(error[valid] / sigma[valid]))
    return ratios[0], ratios[1]


def _uncertainties(locs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-axis sigma columns of ``locs`` (``uncertainty_nm`` as fallback), or None."""
    sigmas = []
    for column in ("uncertainty_x_nm", "uncertainty_y_nm"):
        source = column if column in locs.columns else "uncertainty_nm"
        if source not in locs.columns:
            return None
        sigmas.append(np.asarray(locs[source], dtype=np.float64))
    return sigmas[0], sigmas[1]


def evaluate(truth: pd.DataFrame, locs: pd.DataFrame, tolerance_nm: float = 250.0) -> dict:
    """SMLM-challenge detection and accuracy metrics of ``locs`` against ``truth``.

    Parameters
    ----------
    truth, locs : DataFrame
        Ground-truth and localization tables.
    tolerance_nm : float
        Matching tolerance, nm (see :func:`match_localizations`).

    Returns
    -------
    dict
        ``n_truth``, ``n_locs``, ``tolerance_nm``, ``tp``, ``fp``, ``fn``; ``jaccard``,
        ``precision``, ``recall`` in percent (0 for an empty denominator); ``rmse_lateral_nm``,
        ``rmse_x_nm``, ``rmse_y_nm`` over matches (NaN without matches); the lateral efficiency
        ``100 - sqrt((100 - jaccard)**2 + (1/nm * rmse_lateral_nm)**2)``; and, if ``locs`` has
        uncertainty columns, ``calibration_x`` and ``calibration_y`` (see
        :func:`uncertainty_calibration`).
    """
    match = match_localizations(truth, locs, tolerance_nm)
    tp, fp, fn = match.tp, match.fp, match.fn
    jaccard = _percent(tp, tp + fp + fn)
    rmse_lateral = _rms(np.hypot(match.dx, match.dy))
    metrics = {
        "n_truth": tp + fn,
        "n_locs": tp + fp,
        "tolerance_nm": float(tolerance_nm),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "jaccard": jaccard,
        "precision": _percent(tp, tp + fp),
        "recall": _percent(tp, tp + fn),
        "rmse_lateral_nm": rmse_lateral,
        "rmse_x_nm": _rms(match.dx),
        "rmse_y_nm": _rms(match.dy),
        "efficiency": 100.0 - float(np.hypot(100.0 - jaccard, 1.0 * rmse_lateral)),
    }
    sigmas = _uncertainties(locs)
    if sigmas is not None:
        metrics["calibration_x"], metrics["calibration_y"] = uncertainty_calibration(
            match.dx, match.dy, sigmas[0][match.loc_index], sigmas[1][match.loc_index]
        )
    return metrics


def frc_curve(
    image_a: np.ndarray, image_b: np.ndarray, pixel_size_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two images of the same field.

    Each image is multiplied by a Tukey window and zero-padded to a square before the Fourier
    transform; rings are one frequency step wide, up to the Nyquist frequency.

    Parameters
    ----------
    image_a, image_b : ndarray, shape (rows, cols)
        Images of equal shape.
    pixel_size_nm : float
        Pixel size, nm.

    Returns
    -------
    spatial_frequency : ndarray
        Ring frequencies, 1/nm.
    frc : ndarray
        Correlation per ring; NaN for rings without power in either image.
    """
    a = np.asarray(image_a, dtype=np.float64)
    b = np.asarray(image_b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"need two 2D images of equal shape, got {a.shape} and {b.shape}")
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be positive, got {pixel_size_nm}")
    window = np.outer(tukey(a.shape[0], _TUKEY_ALPHA), tukey(a.shape[1], _TUKEY_ALPHA))
    n = max(a.shape)
    fa = np.fft.rfft2(a * window, s=(n, n))
    fb = np.fft.rfft2(b * window, s=(n, n))
    kx = np.fft.rfftfreq(n) * n
    ky = np.fft.fftfreq(n) * n
    ring = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.intp)
    # rfft2 stores half the plane: columns other than 0 (and n/2 for even n) stand for two.
    weight = np.full(kx.size, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    weight = np.broadcast_to(weight, ring.shape)
    n_rings = n // 2 + 1
    inside = ring < n_rings

    def ring_sum(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring[inside], (values * weight)[inside], minlength=n_rings)

    numerator = ring_sum((fa * fb.conj()).real)
    denominator = np.sqrt(ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2))
    frc = np.full(n_rings, np.nan)
    np.divide(numerator, denominator, out=frc, where=denominator > 0)
    return np.arange(n_rings) / (n * pixel_size_nm), frc


def frc_resolution(
    image_a: np.ndarray, image_b: np.ndarray, pixel_size_nm: float, threshold: float = 1 / 7
) -> float:
    """FRC resolution: inverse of the first frequency where the smoothed FRC drops below
    ``threshold``.

    The FRC curve is smoothed with a moving average over about 2 % of the rings (at least 3)
    and the crossing is interpolated linearly between rings.

    Parameters
    ----------
    image_a, image_b : ndarray, shape (rows, cols)
        Two independent images of the same structure.
    pixel_size_nm : float
        Pixel size, nm.
    threshold : float
        FRC threshold (default 1/7).

    Returns
    -------
    float
        Resolution in nm; NaN if the smoothed FRC never drops below the threshold.
    """
    freq, frc = frc_curve(image_a, image_b, pixel_size_nm)
    size = max(3, 2 * (frc.size // 100) + 1)
    smooth = uniform_filter1d(frc, size=size, mode="nearest")
    below = np.flatnonzero(smooth[1:] < threshold) + 1
    if below.size == 0:
        return float("nan")
    k = below[0]
    before, after = smooth[k - 1], smooth[k]
    fraction = (before - threshold) / (before - after) if before > threshold else 1.0
    return float(1.0 / (freq[k - 1] + fraction * (freq[k] - freq[k - 1])))


def frc_from_localizations(
    locs: pd.DataFrame,
    shape_nm: tuple[float, float],
    pixel_size_nm: float,
    block_size: int = 50,
    threshold: float = 1 / 7,
) -> float:
    """FRC resolution of a localization table split into two halves by blocks of frames.

    Frames are grouped in consecutive blocks of ``block_size``; even blocks form one half and
    odd blocks the other. Each half is rendered as a 2D histogram and passed to
    :func:`frc_resolution`.

    Parameters
    ----------
    locs : DataFrame
        Localization table (``frame``, ``x_nm``, ``y_nm``).
    shape_nm : (float, float)
        Field of view (height, width) in nm; localizations outside it are ignored.
    pixel_size_nm : float
        Pixel size of the rendered histograms, nm.
    block_size : int
        Number of consecutive frames per block.
    threshold : float
        FRC threshold (default 1/7).

    Returns
    -------
    float
        Resolution in nm; NaN if it is undefined (e.g. one half is empty).
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if not pixel_size_nm > 0:
        raise ValueError(f"pixel_size_nm must be positive, got {pixel_size_nm}")
    xy, frames = read_table(locs, "locs")
    rows, cols = (max(1, int(np.ceil(extent / pixel_size_nm))) for extent in shape_nm)
    extent = ((0.0, rows * pixel_size_nm), (0.0, cols * pixel_size_nm))
    half = (frames // block_size) % 2
    images = [
        np.histogram2d(xy[half == h, 1], xy[half == h, 0], bins=(rows, cols), range=extent)[0]
        for h in (0, 1)
    ]
    return frc_resolution(images[0], images[1], pixel_size_nm, threshold)


def format_table(metrics: dict) -> str:
    """Two-column text table of a metrics dictionary (e.g. from :func:`evaluate`).

    Known keys are shown with descriptive names and units, others under their key; integers
    are printed as such and other numbers with three decimals.
    """
    names = [_LABELS.get(key, key) for key in metrics]
    values = [
        str(value) if isinstance(value, int | np.integer) else f"{value:.3f}"
        for value in metrics.values()
    ]
    name_width = max([len("Metric"), *map(len, names)])
    value_width = max([len("Value"), *map(len, values)])
    lines = [f"{'Metric':<{name_width}}  {'Value':>{value_width}}"]
    lines.append(f"{'-' * name_width}  {'-' * value_width}")
    lines += [f"{n:<{name_width}}  {v:>{value_width}}" for n, v in zip(names, values, strict=True)]
    return "\n".join(lines)


__all__ = ["REQUIRED_COLUMNS", "MatchResult", "evaluate", "format_table", "frc_curve",
           "frc_from_localizations", "frc_resolution", "match_localizations", "match_points",
           "uncertainty_calibration"]
