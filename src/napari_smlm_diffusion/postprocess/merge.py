"""Merge the detections of one molecule over consecutive frames (blinks) into one localization.

Linking: a detection in frame ``f`` is linked to one in frames ``f+1 .. f+1+gap`` within
``radius_nm``. Candidate links come from one k-d tree over ``(x, y, frame * radius/(gap+1.5))``
(Chebyshev ball, then the Euclidean distance is checked). Each detection gets at most one
successor and one predecessor: in rounds, every detection picks its best free successor
(fewest frames apart, then closest) and every successor keeps its best suitor. The chains are
the molecules. Cost: n log n.

Merged values: position weighted by ``1/sigma^2`` per axis (``uncertainty_x_nm`` /
``uncertainty_y_nm`` or ``uncertainty_nm``; equal weights without them), combined per-axis
uncertainty ``1/sqrt(sum 1/sigma^2)``, summed ``photons``, first ``frame``, ``frames_on``
(detections merged) and ``last_frame``; other numeric columns are averaged.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from ..metrics import _uncertainties
from .common import PostprocessError, coordinates

_MAX_ROUNDS = 50


def _candidates(x, y, frames, radius, gap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (earlier i, later j) within ``radius`` and 1..gap+1 frames apart, with a sort key."""
    scale = radius / (gap + 1.5)
    points = np.column_stack([x, y, frames * scale])
    pairs = cKDTree(points).query_pairs(radius, p=np.inf, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    swap = frames[i] > frames[j]
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    step = frames[j] - frames[i]
    distance = np.hypot(x[j] - x[i], y[j] - y[i])
    ok = (step >= 1) & (distance <= radius)
    # fewer frames apart first, then closer (distance / radius < 1)
    return i[ok], j[ok], step[ok] + distance[ok] / (radius * (1 + 1e-9))


def _best_per(owner: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Positions of the smallest ``key`` for each distinct ``owner``."""
    order = np.lexsort((key, owner))
    first = np.ones(order.size, dtype=bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    return order[first]


def link(
    x: np.ndarray, y: np.ndarray, frames: np.ndarray, radius_nm: float, gap: int
) -> np.ndarray:
    """Molecule label (0..m-1) of each detection (see the module docstring)."""
    n = x.size
    i, j, key = _candidates(x, y, frames, radius_nm, gap)
    has_next = np.zeros(n, dtype=bool)
    has_prev = np.zeros(n, dtype=bool)
    linked_i, linked_j = [], []
    for _ in range(_MAX_ROUNDS):
        free = ~has_next[i] & ~has_prev[j]
        i, j, key = i[free], j[free], key[free]
        if i.size == 0:
            break
        pick = _best_per(i, key)
        pick = pick[_best_per(j[pick], key[pick])]
        has_next[i[pick]] = True
        has_prev[j[pick]] = True
        linked_i.append(i[pick])
        linked_j.append(j[pick])
    a = np.concatenate([np.empty(0, np.intp), *linked_i])
    b = np.concatenate([np.empty(0, np.intp), *linked_j])
    graph = coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def merge_blinks(table: pd.DataFrame, radius_nm: float = 50.0, gap: int = 1) -> pd.DataFrame:
    """Merge detections of the same molecule in consecutive frames.

    Parameters
    ----------
    table : DataFrame
        Localizations (``frame``, ``x_nm``, ``y_nm``; optional ``uncertainty_nm`` or per-axis
        uncertainties, ``photons`` and other numeric columns).
    radius_nm : float
        Largest distance between linked detections, nm.
    gap : int
        Missing frames allowed inside one molecule's on-time (0: strictly consecutive).

    Returns
    -------
    DataFrame
        One row per molecule, sorted by first frame (see the module docstring for the columns).
    """
    if not (math.isfinite(radius_nm) and radius_nm > 0):
        raise PostprocessError(f"merging: the radius must be a positive number of nm, "
                               f"got {radius_nm}")
    if gap < 0:
        raise PostprocessError(f"merging: the gap must be 0 or more frames, got {gap}")
    x, y, frames = coordinates(table, "merging")
    label = link(x, y, frames, radius_nm, int(gap))
    m = int(label.max()) + 1
    count = np.bincount(label, minlength=m).astype(np.float64)
    sigmas = _uncertainties(table)
    out: dict[str, np.ndarray] = {}
    for column in table.columns:
        if column in ("frame", "x_nm", "y_nm") or not pd.api.types.is_numeric_dtype(
                table[column]):
            continue
        values = table[column].to_numpy(dtype=np.float64)
        total = np.bincount(label, values, minlength=m)
        out[column] = total if column == "photons" else total / count
    for axis, (column, values) in enumerate((("x_nm", x), ("y_nm", y))):
        if sigmas is None:
            out[column] = np.bincount(label, values, minlength=m) / count
            continue
        sigma = sigmas[axis]
        if not np.all(np.isfinite(sigma) & (sigma > 0)):
            raise PostprocessError("merging: uncertainties must be positive and finite to "
                                   "weight positions by 1/sigma^2; fix or drop that column")
        weight = 1.0 / sigma**2
        total = np.bincount(label, weight, minlength=m)
        out[column] = np.bincount(label, weight * values, minlength=m) / total
        out[("uncertainty_x_nm", "uncertainty_y_nm")[axis]] = 1.0 / np.sqrt(total)
    if sigmas is not None:
        out["uncertainty_nm"] = np.sqrt(
            (out["uncertainty_x_nm"] ** 2 + out["uncertainty_y_nm"] ** 2) / 2)
    first = np.full(m, np.iinfo(np.int64).max)
    np.minimum.at(first, label, frames)
    last = np.zeros(m, dtype=np.int64)
    np.maximum.at(last, label, frames)
    merged = pd.DataFrame({"frame": first, "x_nm": out.pop("x_nm"), "y_nm": out.pop("y_nm"),
                           **out, "frames_on": count.astype(np.int64), "last_frame": last})
    return merged.sort_values("frame", kind="stable").reset_index(drop=True)
