"""Drift correction of localizations by redundant cross-correlation (RCC).

The acquisition is cut into time windows of ``window`` frames. Each window is rendered as a
histogram (``bin_nm`` pixels); the cross-correlation of every pair of windows (FFT, smoothed by
one bin, mean removed) gives their relative shift from its peak, located to sub-pixel precision
by a three-point Gaussian fit per axis. The over-determined system ``d_j - d_i = s_ij`` is
solved by least squares; pairs whose residual exceeds three robust standard deviations are
dropped and the system solved again (Wang et al., Opt. Express 22, 15982, 2014).

Refinement (default on): with the RCC drift removed, the localizations of window ``j`` found
again near those of window ``i`` (within ``refine_radius_nm``) give the remaining shift of the
pair as the mode of their displacements (mean shift); these shifts are solved the same way and
added. The per-window drifts are turned into a per-frame curve by a smoothing spline (GCV)
through the window centres (an interpolating cubic spline for fewer than 30 windows), zero
at the first frame.

Convention: ``drift_nm[f]`` is the apparent displacement of the sample in frame ``f``; the
corrected positions are ``x - drift_x[frame]``, ``y - drift_y[frame]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import fft
from scipy.interpolate import CubicSpline, make_smoothing_spline
from scipy.ndimage import shift as ndimage_shift
from scipy.spatial import cKDTree

from .common import PostprocessError, coordinates
from .render import render_histogram

#: Largest memory (bytes) of the window spectra; larger fields get coarser bins.
MAX_SPECTRA_BYTES = 512 * 1024**2
_REFINE_SAMPLES = 2000  # localizations per window queried in the refinement
_REFINE_NEIGHBOURS = 8  # nearest re-found localizations per query
_MIN_LOCS = 20  # windows with fewer localizations are not used
#: Most time windows (all their pairs are cross-correlated).
MAX_WINDOWS = 100
#: From this many windows the drift curve is a smoothing spline rather than an interpolation.
SMOOTH_MIN_WINDOWS = 30


@dataclass
class DriftResult:
    """Estimated drift.

    Attributes
    ----------
    drift_nm : ndarray, shape (n_frames, 2)
        Drift (x, y) of each frame ``0 .. last frame``, nm; zero at the first frame with data.
    window_frames : ndarray, shape (n_windows,)
        Mean frame of each window used.
    window_drift_nm : ndarray, shape (n_windows, 2)
        Drift of each window (same zero as ``drift_nm``).
    bin_nm : float
        Histogram pixel size used for the cross-correlations.
    pairs_used, pairs_rejected : int
        Window pairs kept and rejected as outliers by the least-squares solution.
    """

    drift_nm: np.ndarray
    window_frames: np.ndarray
    window_drift_nm: np.ndarray
    bin_nm: float
    pairs_used: int
    pairs_rejected: int


def _peak_offset(minus: float, centre: float, plus: float) -> float:
    """Sub-pixel offset of a peak from three samples: Gaussian fit, parabola as fallback."""
    if min(minus, centre, plus) > 0:
        lm, lc, lp = math.log(minus), math.log(centre), math.log(plus)
        denominator = lm - 2 * lc + lp
        if denominator < 0:
            return float(np.clip((lm - lp) / (2 * denominator), -0.5, 0.5))
    denominator = minus - 2 * centre + plus
    return float(np.clip((minus - plus) / (2 * denominator), -0.5, 0.5)) if denominator < 0 else 0.0


def _cross_shift(spectrum_i, spectrum_j, smooth, shape, reach) -> np.ndarray:
    """Shift (x, y) in bins that moves image i onto image j (peak of their correlation)."""
    cc = fft.irfft2(spectrum_i.conj() * spectrum_j * smooth, s=shape, workers=1)
    ry = np.arange(-reach[0], reach[0] + 1)
    rx = np.arange(-reach[1], reach[1] + 1)
    local = cc[np.ix_(ry % shape[0], rx % shape[1])]
    iy, ix = np.unravel_index(int(np.argmax(local)), local.shape)
    py, px = ry[iy], rx[ix]

    def at(dy: int, dx: int) -> float:
        return float(cc[(py + dy) % shape[0], (px + dx) % shape[1]])

    centre = at(0, 0)
    return np.array([px + _peak_offset(at(0, -1), centre, at(0, 1)),
                     py + _peak_offset(at(-1, 0), centre, at(1, 0))])


def _least_squares(pairs, shifts, n, weight) -> np.ndarray:
    """Weighted least-squares drifts (n, 2) with mean zero from ``d_j - d_i = shifts``."""
    a = _incidence(pairs, n) * weight[:, None]
    b = shifts * weight[:, None]
    a = np.vstack([a, np.ones((1, n))])  # gauge: mean drift zero
    b = np.vstack([b, np.zeros((1, 2))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def solve_shifts(
    pairs: np.ndarray, shifts: np.ndarray, n: int, floor_nm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Drifts ``d`` (n, 2, mean zero) from the pair shifts ``d_j - d_i = shifts``.

    A robust (least absolute deviations, by reweighting) solution finds the pairs whose residual
    exceeds ``max(3 robust sigma, floor_nm)``; they are dropped (as long as every window stays
    connected) and the rest solved by least squares. Returns ``d`` and the mask of pairs kept.
    """
    def residual(d: np.ndarray) -> np.ndarray:
        return np.linalg.norm(d[pairs[:, 1]] - d[pairs[:, 0]] - shifts, axis=1)

    weight = np.ones(len(pairs))
    for _ in range(30):
        d = _least_squares(pairs, shifts, n, weight)
        weight = 1.0 / np.sqrt(np.maximum(residual(d), floor_nm / 100))
    r = residual(d)
    limit = max(3 * 1.4826 * float(np.median(r)), floor_nm)
    keep = np.ones(len(pairs), dtype=bool)
    for k in np.argsort(-r):
        if r[k] <= limit:
            break
        keep[k] = False
        if np.linalg.matrix_rank(_incidence(pairs[keep], n)) < n - 1:
            keep[k] = True  # needed to connect a window
    return _least_squares(pairs[keep], shifts[keep], n, np.ones(int(keep.sum()))), keep


def _incidence(pairs: np.ndarray, n: int) -> np.ndarray:
    a = np.zeros((len(pairs), n))
    a[np.arange(len(pairs)), pairs[:, 1]] = 1.0
    a[np.arange(len(pairs)), pairs[:, 0]] = -1.0
    return a


def _rcc(xs, ys, bin_nm, max_drift_nm, check) -> tuple[np.ndarray, int, float]:
    """Window drifts (n, 2) in nm by RCC, the number of rejected pairs and the bin used."""
    x0 = min(float(x.min()) for x in xs) - max_drift_nm
    y0 = min(float(y.min()) for y in ys) - max_drift_nm
    width = max(float(x.max()) for x in xs) - x0 + max_drift_nm
    height = max(float(y.max()) for y in ys) - y0 + max_drift_nm
    bytes_per_bin = 8 * len(xs) / 2
    bin_nm = max(bin_nm, math.sqrt(width * height * bytes_per_bin / MAX_SPECTRA_BYTES))
    shape = (fft.next_fast_len(math.ceil(height / bin_nm) + 2, real=True),
             fft.next_fast_len(math.ceil(width / bin_nm) + 2, real=True))
    spectra = []
    for x, y in zip(xs, ys, strict=True):
        check()
        image = render_histogram(x - x0, y - y0, bin_nm, shape).astype(np.float32)
        spectrum = fft.rfft2(image, workers=1)
        spectrum[0, 0] = 0.0  # mean removed: the correlation has no pedestal
        spectra.append(spectrum)
    ky = fft.fftfreq(shape[0])[:, None]
    kx = fft.rfftfreq(shape[1])[None, :]
    smooth = np.exp(-2 * np.pi**2 * (kx**2 + ky**2)).astype(np.float32)  # sigma = 1 bin
    reach = (min(math.ceil(max_drift_nm / bin_nm), shape[0] // 2 - 2),
             min(math.ceil(max_drift_nm / bin_nm), shape[1] // 2 - 2))
    n = len(xs)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n)])
    shifts = np.empty((len(pairs), 2))
    for k, (i, j) in enumerate(pairs):
        check()
        shifts[k] = _cross_shift(spectra[i], spectra[j], smooth, shape, reach) * bin_nm
    drift, keep = solve_shifts(pairs, shifts, n, floor_nm=bin_nm)
    return drift, int((~keep).sum()), bin_nm


def _mean_shift(delta: np.ndarray, radius: float) -> np.ndarray | None:
    """Mode of displacements ``delta`` (m, 2): mean shift with a flat kernel of ``radius``."""
    centre = np.zeros(2)
    for _ in range(20):
        near = np.sum((delta - centre) ** 2, axis=1) <= radius**2
        if near.sum() < _MIN_LOCS:
            return None
        new = delta[near].mean(axis=0)
        if np.allclose(new, centre, atol=1e-3):
            return new
        centre = new
    return centre


def _refine(xs, ys, radius, rng, check) -> tuple[np.ndarray, int] | None:
    """Remaining window drifts from displacements of re-found localizations; None if too few."""
    n = len(xs)
    trees = [cKDTree(np.column_stack([x, y])) for x, y in zip(xs, ys, strict=True)]
    samples = []
    for x, y in zip(xs, ys, strict=True):
        pick = rng.choice(x.size, min(x.size, _REFINE_SAMPLES), replace=False)
        samples.append(np.column_stack([x[pick], y[pick]]))
    pairs, shifts = [], []
    for i in range(n):
        for j in range(i + 1, n):
            check()
            dist, found = trees[j].query(samples[i], _REFINE_NEIGHBOURS,
                                         distance_upper_bound=2 * radius, workers=1)
            ok = np.isfinite(dist)
            if ok.sum() < _MIN_LOCS:
                continue
            delta = trees[j].data[found[ok]] - np.broadcast_to(samples[i][:, None, :],
                                                               (*found.shape, 2))[ok]
            shift = _mean_shift(delta, radius)
            if shift is not None:
                pairs.append((i, j))
                shifts.append(shift)
    if not pairs or np.linalg.matrix_rank(_incidence(np.array(pairs), n)) < n - 1:
        return None
    drift, keep = solve_shifts(np.array(pairs), np.array(shifts), n, floor_nm=radius / 10)
    return drift, int((~keep).sum())


def _curve(centres: np.ndarray, drift: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Per-frame drift: a smoothing spline (GCV) through the window drifts from
    :data:`SMOOTH_MIN_WINDOWS` windows on, an interpolating (not-a-knot) cubic spline from 4,
    a least-squares line below; the splines are continued with their end slope before the first
    and after the last window centre."""
    if centres.size < 4:
        return np.column_stack([np.polyval(np.polyfit(centres, drift[:, axis], 1), frames)
                                for axis in range(2)])
    if centres.size >= SMOOTH_MIN_WINDOWS:
        splines = [make_smoothing_spline(centres, drift[:, axis]) for axis in range(2)]
    else:
        splines = [CubicSpline(centres, drift[:, axis]) for axis in range(2)]
    inside = np.clip(frames, centres[0], centres[-1])
    end = np.where(frames < centres[0], centres[0], centres[-1])
    return np.column_stack([spline(inside) + spline.derivative()(end) * (frames - inside)
                            for spline in splines])


def estimate_drift(
    table: pd.DataFrame,
    window: int | None = None,
    bin_nm: float = 20.0,
    max_drift_nm: float = 1000.0,
    refine: bool = True,
    refine_radius_nm: float = 60.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> DriftResult:
    """Estimate the drift of a localization table by RCC (see the module docstring).

    Parameters
    ----------
    table : DataFrame
        Localizations (``frame`` 0-based, ``x_nm``, ``y_nm``).
    window : int, optional
        Frames per time window; default: the acquisition cut into about 20 windows (fewer if
        there are fewer than 1,000 localizations per window).
    bin_nm : float
        Histogram pixel size of the cross-correlations, nm (raised for very large fields so the
        spectra fit in :data:`MAX_SPECTRA_BYTES`).
    max_drift_nm : float
        Largest drift between two windows, nm.
    refine : bool
        Refine by the displacements of localizations found again in other windows.
    refine_radius_nm : float
        Radius of that search, nm (about 3x the localization precision).
    seed : int
        Seed of the subsampling in the refinement.
    progress : callable, optional
        Called as ``progress(done, total)`` after each stage.
    should_stop : callable, optional
        Polled during the work; if it returns True, :class:`InterruptedError` is raised.

    Returns
    -------
    DriftResult

    Raises
    ------
    TableError
        Missing columns, empty table, NaN coordinates.
    PostprocessError
        Fewer than two windows with enough localizations, or invalid parameters.
    """
    for name, value in (("bin_nm", bin_nm), ("max_drift_nm", max_drift_nm),
                        ("refine_radius_nm", refine_radius_nm)):
        if not (math.isfinite(value) and value > 0):
            raise PostprocessError(f"drift correction: {name} must be positive, got {value}")
    x, y, frames = coordinates(table, "drift correction")
    first, last = int(frames.min()), int(frames.max())
    if first == last:
        raise PostprocessError(f"drift correction needs localizations in several frames; all "
                               f"{frames.size} are in frame {first + 1}")
    span = last - first + 1
    if window is None:
        n_windows = int(np.clip(frames.size // 1000, 2, 20))
        window = math.ceil(span / n_windows)
    if window < 1:
        raise PostprocessError(f"drift correction: the window must be at least 1 frame, "
                               f"got {window}")

    def check() -> None:
        if should_stop is not None and should_stop():
            raise InterruptedError("drift correction was cancelled")

    index = (frames - first) // window
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(index.max() + 2))
    groups = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    groups = [g for g in groups if g.size >= _MIN_LOCS]
    if len(groups) > MAX_WINDOWS:
        raise PostprocessError(
            f"drift correction: windows of {window} frames give {len(groups)} windows "
            f"(at most {MAX_WINDOWS}, as all pairs are cross-correlated): choose --window "
            f"{math.ceil(span / MAX_WINDOWS)} or more")
    if len(groups) < 2:
        raise PostprocessError(
            f"drift correction needs at least 2 time windows with {_MIN_LOCS} or more "
            f"localizations; {span} frames in windows of {window} give {len(groups)}: "
            "choose a smaller --window")
    xs, ys = [x[g] for g in groups], [y[g] for g in groups]
    centres = np.array([frames[g].mean() for g in groups])
    stages = 3 if refine else 2
    drift, rejected, used_bin = _rcc(xs, ys, bin_nm, max_drift_nm, check)
    if progress is not None:
        progress(1, stages)
    n_pairs = len(groups) * (len(groups) - 1) // 2
    if refine:
        moved_x = [xw - d for xw, d in zip(xs, drift[:, 0], strict=True)]
        moved_y = [yw - d for yw, d in zip(ys, drift[:, 1], strict=True)]
        refined = _refine(moved_x, moved_y, refine_radius_nm, np.random.default_rng(seed), check)
        if refined is not None:
            drift = drift + refined[0]
            rejected = refined[1]
        if progress is not None:
            progress(2, stages)
    all_frames = np.arange(last + 1, dtype=np.float64)
    curve = _curve(centres, drift, all_frames)
    zero = curve[first].copy()
    if progress is not None:
        progress(stages, stages)
    return DriftResult(curve - zero, centres, drift - zero, float(used_bin), n_pairs - rejected,
                       rejected)


def apply_drift(table: pd.DataFrame, drift_nm: np.ndarray) -> pd.DataFrame:
    """Return a copy of ``table`` with ``x_nm``/``y_nm`` minus the drift of each frame."""
    x, y, frames = coordinates(table, "drift correction")
    if frames.max() >= len(drift_nm):
        raise PostprocessError(f"the drift curve covers {len(drift_nm)} frames but the table "
                               f"has frame {int(frames.max()) + 1}")
    out = table.copy()
    out["x_nm"] = x - drift_nm[frames, 0]
    out["y_nm"] = y - drift_nm[frames, 1]
    return out


def sum_shifted_frames(
    frames: Iterable[np.ndarray], drift_nm: np.ndarray, pixel_size_nm: float, first_frame: int = 0
) -> np.ndarray:
    """Sum per-frame images (e.g. KDE or posterior frames) after undoing the drift of each.

    Parameters
    ----------
    frames : iterable of ndarray (rows, cols)
        Images of consecutive frames starting at ``first_frame`` (0-based), streamed.
    drift_nm : ndarray, shape (n_frames, 2)
        Drift curve (x, y) in nm, e.g. :attr:`DriftResult.drift_nm`.
    pixel_size_nm : float
        Pixel size of the images, nm.
    first_frame : int
        Frame index of the first image.

    Returns
    -------
    numpy.ndarray of float64
        Sum of the frames, each shifted by ``-drift`` (cubic spline interpolation, zero outside).
    """
    total = None
    for k, image in enumerate(frames):
        f = first_frame + k
        if f >= len(drift_nm):
            raise PostprocessError(f"the drift curve covers {len(drift_nm)} frames; image of "
                                   f"frame {f + 1} has no drift")
        dx, dy = drift_nm[f] / pixel_size_nm
        moved = np.array(image, dtype=np.float64)
        if dx or dy:  # a frame without drift (e.g. the first) is added as it is
            moved = ndimage_shift(moved, (-dy, -dx), order=3, mode="constant", cval=0.0)
        total = moved if total is None else total + moved
    if total is None:
        raise PostprocessError("no frames to sum")
    return total
