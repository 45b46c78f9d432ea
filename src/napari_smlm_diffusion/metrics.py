"""Localization accuracy metrics: matching to ground truth, SMLM-challenge scores and FRC.

Localization tables are pandas DataFrames with columns ``frame`` (int, 0-based), ``x_nm`` and
``y_nm`` (nm, origin at the top-left corner of the top-left pixel, x along columns, y along
rows); uncertainty columns ``uncertainty_x_nm``, ``uncertainty_y_nm`` or ``uncertainty_nm``
(per-axis 1-sigma, nm) are optional.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.ndimage import uniform_filter1d
from scipy.optimize import linear_sum_assignment
from scipy.signal.windows import tukey
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

REQUIRED_COLUMNS = ("frame", "x_nm", "y_nm")

# Frames with more candidate pairs than this are split into independent clusters with a k-d tree
# before the Hungarian assignment.
_DENSE_MAX_PAIRS = 250_000
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


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matches between ground truth and localizations.

    Attributes
    ----------
    truth_index, loc_index : ndarray of int, shape (tp,)
        Row positions (for ``DataFrame.iloc``) of the matched truth and localization rows,
        ordered by frame.
    dx, dy : ndarray of float, shape (tp,)
        Localization minus truth position of each match, nm.
    tp, fp, fn : int
        Matched pairs, unmatched localizations and unmatched truth emitters.
    """

    truth_index: np.ndarray
    loc_index: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    tp: int
    fp: int
    fn: int


def _read_table(table: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a localization table and return its (n, 2) x/y array and int frames."""
    for column in REQUIRED_COLUMNS:
        if column not in table.columns:
            raise ValueError(f"{name} table is missing required column {column!r}")
    frames = np.asarray(table["frame"], dtype=np.float64)
    if not np.all(np.isfinite(frames)) or np.any(frames != np.round(frames)):
        raise ValueError(f"{name} column 'frame' must hold integer frame numbers")
    xy = np.column_stack(
        [np.asarray(table["x_nm"], dtype=np.float64), np.asarray(table["y_nm"], dtype=np.float64)]
    )
    for axis, column in enumerate(("x_nm", "y_nm")):
        if not np.all(np.isfinite(xy[:, axis])):
            raise ValueError(f"{name} column {column!r} contains non-finite values")
    return xy, frames.astype(np.int64)


def _common_groups(keys_a: np.ndarray, keys_b: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
    """Yield the row positions of ``a`` and of ``b`` sharing each key present in both."""
    order_a = np.argsort(keys_a, kind="stable")
    order_b = np.argsort(keys_b, kind="stable")
    unique_a, start_a = np.unique(keys_a[order_a], return_index=True)
    unique_b, start_b = np.unique(keys_b[order_b], return_index=True)
    stop_a = np.append(start_a[1:], keys_a.size)
    stop_b = np.append(start_b[1:], keys_b.size)
    _, ia, ib = np.intersect1d(unique_a, unique_b, assume_unique=True, return_indices=True)
    for i, j in zip(ia, ib, strict=True):
        yield order_a[start_a[i] : stop_a[i]], order_b[start_b[j] : stop_b[j]]


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.empty(0, dtype=np.intp), *parts])


def _assign_dense(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of points ``a`` to ``b`` maximising the number of pairs within ``tol``,
    then minimising their summed distance; returns the matched positions in ``a`` and ``b``."""
    dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
    valid = dist <= tol
    if not valid.any():
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    # Any invalid pair costs more than all valid pairs together, so the assignment first
    # maximises the number of valid pairs; invalid pairs are then dropped.
    forbidden = tol * (min(dist.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(valid, dist, forbidden))
    keep = valid[rows, cols]
    return rows[keep], cols[keep]


def _assign_sparse(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_assign_dense`, solved separately on each cluster of points linked by
    candidate pairs (found with k-d trees), which keeps large frames tractable."""
    # Slightly enlarged radius: the exact test ``dist <= tol`` is redone in _assign_dense.
    pairs = cKDTree(a).sparse_distance_matrix(
        cKDTree(b), tol * (1 + 1e-9) + 1e-9, output_type="ndarray"
    )
    n = len(a)
    graph = coo_matrix(
        (np.ones(pairs.size), (pairs["i"], n + pairs["j"])), shape=(n + len(b), n + len(b))
    )
    labels = connected_components(graph, directed=False)[1]
    rows, cols = [], []
    for ia, ib in _common_groups(labels[:n], labels[n:]):
        r, c = _assign_dense(a[ia], b[ib], tol)
        rows.append(ia[r])
        cols.append(ib[c])
    return _concat(rows), _concat(cols)


def match_points(a: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of points ``a`` (n, 2) to ``b`` (m, 2): the Hungarian method pairs
    as many points as possible at most ``tol`` apart and, among those assignments, minimises the
    summed distance (large sets are split into independent clusters first). Returns the matched
    row positions in ``a`` and in ``b``."""
    a, b = np.asarray(a, dtype=float).reshape(-1, 2), np.asarray(b, dtype=float).reshape(-1, 2)
    if len(a) == 0 or len(b) == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    assign = _assign_dense if len(a) * len(b) <= _DENSE_MAX_PAIRS else _assign_sparse
    return assign(a, b, tol)


def match_localizations(
    truth: pd.DataFrame, locs: pd.DataFrame, tolerance_nm: float = 250.0
) -> MatchResult:
    """Match localizations to ground truth one-to-one within each frame.

    The Hungarian method pairs as many emitters as possible with distance ``<= tolerance_nm``
    and, among those assignments, minimises the summed distance.

    Parameters
    ----------
    truth, locs : DataFrame
        Ground-truth and localization tables (columns ``frame``, ``x_nm``, ``y_nm``).
    tolerance_nm : float
        Largest distance of a match, nm.

    Returns
    -------
    MatchResult

    Raises
    ------
    ValueError
        If a required column is missing or invalid, or the tolerance is not positive and finite.
    """
    if not (np.isfinite(tolerance_nm) and tolerance_nm > 0):
        raise ValueError(f"tolerance_nm must be positive and finite, got {tolerance_nm}")
    truth_xy, truth_frames = _read_table(truth, "truth")
    loc_xy, loc_frames = _read_table(locs, "locs")
    truth_rows, loc_rows = [], []
    for it, il in _common_groups(truth_frames, loc_frames):
        r, c = match_points(truth_xy[it], loc_xy[il], tolerance_nm)
        truth_rows.append(it[r])
        loc_rows.append(il[c])
    truth_index, loc_index = _concat(truth_rows), _concat(loc_rows)
    error = loc_xy[loc_index] - truth_xy[truth_index]
    tp = truth_index.size
    return MatchResult(
        truth_index=truth_index,
        loc_index=loc_index,
        dx=error[:, 0],
        dy=error[:, 1],
        tp=tp,
        fp=len(loc_xy) - tp,
        fn=len(truth_xy) - tp,
    )


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
    xy, frames = _read_table(locs, "locs")
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
