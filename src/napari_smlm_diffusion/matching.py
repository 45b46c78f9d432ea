"""One-to-one matching of points and of localization tables (Hungarian method, per frame).

Localization tables are pandas DataFrames with columns ``frame`` (int, 0-based), ``x_nm`` and
``y_nm`` (see :mod:`napari_smlm_diffusion.metrics` for the scores built on the matches).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .errors import InputError

REQUIRED_COLUMNS = ("frame", "x_nm", "y_nm")

# Frames with more candidate pairs than this are split into independent clusters with a k-d tree
# before the Hungarian assignment.
_DENSE_MAX_PAIRS = 250_000


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


def read_table(table: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate a localization table and return its (n, 2) x/y array and int frames."""
    for column in REQUIRED_COLUMNS:
        if column not in table.columns:
            raise InputError(f"{name} table is missing required column {column!r}")
    frames = np.asarray(table["frame"], dtype=np.float64)
    if not np.all(np.isfinite(frames)) or np.any(frames != np.round(frames)):
        raise InputError(f"{name} column 'frame' must hold integer frame numbers")
    xy = np.column_stack(
        [np.asarray(table["x_nm"], dtype=np.float64), np.asarray(table["y_nm"], dtype=np.float64)]
    )
    for axis, column in enumerate(("x_nm", "y_nm")):
        if not np.all(np.isfinite(xy[:, axis])):
            raise InputError(f"{name} column {column!r} contains non-finite values")
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
        raise InputError(f"tolerance_nm must be positive and finite, got {tolerance_nm}")
    truth_xy, truth_frames = read_table(truth, "truth")
    loc_xy, loc_frames = read_table(locs, "locs")
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


