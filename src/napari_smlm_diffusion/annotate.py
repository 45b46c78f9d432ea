"""Regions of high posterior uncertainty: threshold a std map, add drawn regions, measure them.

Everything works on label images on the grid of the std map: (rows, cols) or (frames, rows, cols)
with 0 for background. Positions are in array-index coordinates of that grid in the package
convention (pixel (r, c) covers [r, r+1) x [c, c+1)); for a map on the 4x grid of a raw layer
with pixel size s nm, a localization at (y_nm, x_nm) is at (y_nm, x_nm) / (s / 4)
(:func:`grid_positions`). A region never spans frames: thresholded regions are connected within
one frame, and a drawn region that has no frame is copied into every frame as separate regions.
No napari, no Qt.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from .geometry import data_coordinate, nm_to_px, pixel_centre, px_to_nm, to_user_frame
from .io import PathLike, atomic_write

THRESHOLD = "threshold"
DRAWN = "drawn"
#: In-memory statistics column -> CSV header (frames written from 1, as in localization CSVs).
TABLE_COLUMNS = {
    "region": "region",
    "source": "source",
    "frame": "frame",
    "area_um2": "area [um^2]",
    "mean_std": "mean std",
    "max_std": "max std",
    "localizations": "localizations",
    "median_uncertainty_nm": "median uncertainty [nm]",
    "y_nm": "y [nm]",
    "x_nm": "x [nm]",
}
# 8-connected within a frame, never across frames
_IN_PLANE = np.ones((3, 3), dtype=bool)


def threshold_regions(std: np.ndarray, threshold: float, min_area_px: int = 1) -> np.ndarray:
    """Label the connected regions where ``std > threshold`` (int32, 0 = background).

    Regions are 8-connected within a frame; regions of fewer than ``min_area_px`` pixels are
    dropped. Labels run 1..N, frame by frame in raster order of each region's first pixel.
    """
    std = np.asarray(std)
    if std.ndim not in (2, 3):
        raise ValueError(f"expected a std map (rows, cols) or (frames, rows, cols), got shape "
                         f"{std.shape}")
    mask = np.nan_to_num(std, nan=-np.inf) > threshold
    structure = _IN_PLANE if std.ndim == 2 else np.stack([np.zeros_like(_IN_PLANE), _IN_PLANE,
                                                          np.zeros_like(_IN_PLANE)])
    labels, count = ndimage.label(mask, structure=structure)
    if min_area_px > 1 and count:
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        keep = areas >= min_area_px
        keep[0] = False
        renumber = np.zeros(count + 1, dtype=np.int32)
        renumber[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        labels = renumber[labels]
    return labels.astype(np.int32, copy=False)


def polygon_mask(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a (rows, cols) grid whose centre lies inside a polygon (even-odd rule).

    ``vertices`` is (k, 2) as (row, col) in napari data coordinates of the grid, where the centre
    of pixel (r, c) is at (r, c) (:func:`~napari_smlm_diffusion.geometry.data_coordinate`).
    """
    vertices = np.asarray(vertices, dtype=float)
    mask = np.zeros(shape, dtype=bool)
    if len(vertices) < 3:
        return mask
    r0 = max(int(np.floor(vertices[:, 0].min())), 0)
    r1 = min(int(np.ceil(vertices[:, 0].max())) + 1, shape[0])
    c0 = max(int(np.floor(vertices[:, 1].min())), 0)
    c1 = min(int(np.ceil(vertices[:, 1].max())) + 1, shape[1])
    if r0 >= r1 or c0 >= c1:
        return mask
    # pixel centres in data coordinates
    rows, cols = data_coordinate(pixel_centre(np.mgrid[r0:r1, c0:c1]))
    inside = np.zeros(rows.shape, dtype=bool)
    yi, xi = vertices[:, 0], vertices[:, 1]
    yj, xj = np.roll(yi, 1), np.roll(xi, 1)
    for a_y, a_x, b_y, b_x in zip(yi, xi, yj, xj, strict=True):
        if a_y == b_y:
            continue
        crosses = (a_y > rows) != (b_y > rows)
        x_cross = (b_x - a_x) * (rows - a_y) / (b_y - a_y) + a_x
        inside ^= crosses & (cols < x_cross)
    mask[r0:r1, c0:c1] = inside
    return mask


def ellipse_polygon(corners: np.ndarray, points: int = 64) -> np.ndarray:
    """Polygon (``points`` vertices) of the ellipse inscribed in a (possibly rotated) box given
    by its 4 corners in order, as napari's Shapes layer stores ellipses."""
    corners = np.asarray(corners, dtype=float)
    centre = corners.mean(axis=0)
    half_a = (corners[1] - corners[0]) / 2.0
    half_b = (corners[3] - corners[0]) / 2.0
    t = np.linspace(0.0, 2.0 * np.pi, points, endpoint=False)[:, None]
    return centre + np.cos(t) * half_a + np.sin(t) * half_b


def add_drawn_regions(labels: np.ndarray, regions: Sequence[tuple[int | None, np.ndarray]]
                      ) -> tuple[np.ndarray, dict[int, str]]:
    """Burn drawn regions into a copy of ``labels``; return it and the source of every label.

    ``regions`` holds (frame index in ``labels`` or None, boolean (rows, cols) mask). A drawn
    region takes its pixels from any region below it; a region without a frame goes into every
    frame, as one region per frame. Drawn regions get the labels after the largest one present;
    empty ones are skipped.
    """
    combined = np.array(labels, dtype=np.int32, copy=True)
    sources = {int(v): THRESHOLD for v in np.unique(combined) if v}
    frames = combined.shape[0] if combined.ndim == 3 else None
    next_label = int(combined.max(initial=0)) + 1
    for frame, mask in regions:
        mask = np.asarray(mask, dtype=bool)
        if frames is None:
            targets: list[int | None] = [None]
        else:
            targets = list(range(frames)) if frame is None else [int(frame)]
        for target in targets:
            if not mask.any() or (target is not None and not 0 <= target < frames):
                continue
            plane = combined if target is None else combined[target]
            plane[mask] = next_label
            sources[next_label] = DRAWN
            next_label += 1
    present = set(np.unique(combined).tolist())  # drawn regions may cover thresholded ones
    return combined, {label: source for label, source in sources.items() if label in present}


def grid_positions(table: pd.DataFrame, grid_pixel_nm: float, first_frame: int | None = None
                   ) -> np.ndarray:
    """Positions of localizations on a grid whose origin is the package origin.

    Returns (n, 2) (row, col), or (n, 3) (frame index - ``first_frame``, row, col) when
    ``first_frame`` is given.
    """
    rows = nm_to_px(table["y_nm"].to_numpy(dtype=float), grid_pixel_nm)
    cols = nm_to_px(table["x_nm"].to_numpy(dtype=float), grid_pixel_nm)
    columns = [rows, cols]
    if first_frame is not None:
        columns.insert(0, table["frame"].to_numpy(dtype=float) - first_frame)
    return np.stack(columns, axis=1) if len(table) else np.zeros((0, len(columns)))


def _labels_at(labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Label under each position (package convention; 0 outside the grid or for NaN)."""
    if positions.shape[1] < labels.ndim:
        raise ValueError(f"positions with {positions.shape[1]} coordinates cannot be placed on "
                         f"{labels.ndim}-D labels (a frame coordinate is needed)")
    index = np.floor(positions[:, -labels.ndim:])
    finite = np.isfinite(index).all(axis=1)
    index = np.where(finite[:, None], index, -1).astype(np.int64)
    inside = finite & np.all((index >= 0) & (index < np.asarray(labels.shape)), axis=1)
    found = np.zeros(len(positions), dtype=np.int64)
    found[inside] = labels[tuple(index[inside].T)]
    return found


def region_statistics(
    labels: np.ndarray,
    std: np.ndarray,
    pixel_size_nm: float,
    positions: np.ndarray | None = None,
    uncertainty: np.ndarray | None = None,
    first_frame: int = 0,
    sources: dict[int, str] | None = None,
) -> pd.DataFrame:
    """Per-region statistics of a label image over a std map of the same grid.

    Parameters
    ----------
    labels : ndarray
        (rows, cols) or (frames, rows, cols) integer labels, 0 = background.
    std : ndarray
        Std map of the same shape.
    pixel_size_nm : float
        Pixel size of the grid (for the 4x grid of a raw layer: its pixel size / 4).
    positions : ndarray, optional
        Localizations, (n, labels.ndim) in array-index coordinates of the grid, package
        convention (see :func:`grid_positions`); for 2D labels a leading frame column is ignored,
        so every frame's localizations count.
    uncertainty : ndarray, optional
        (n,) uncertainty in nm of each localization (NaN where unknown).
    first_frame : int
        Frame of the stack that frame 0 of ``labels`` is (for the ``frame`` column).
    sources : dict, optional
        Label -> "threshold" or "drawn" (default "threshold").

    Returns
    -------
    pandas.DataFrame
        One row per label present: ``region``, ``source``, ``frame`` (0-based; missing for 2D
        labels), ``area_um2``, ``mean_std``, ``max_std``, ``localizations`` (count inside),
        ``median_uncertainty_nm`` (of those, NaN if none is known), ``y_nm``, ``x_nm``
        (centroid, from the grid origin).
    """
    labels = np.asarray(labels)
    std = np.asarray(std, dtype=np.float64)
    if labels.shape != std.shape:
        raise ValueError(f"labels {labels.shape} and std map {std.shape} differ in shape")
    ids = np.unique(labels)
    ids = ids[ids != 0]
    columns = list(TABLE_COLUMNS)
    if ids.size == 0:
        return pd.DataFrame({name: pd.Series(dtype=float) for name in columns})
    index = ndimage.value_indices(labels, ignore_value=0)
    area_px = np.array([index[i][0].size for i in ids])
    std_values = [std[index[i]] for i in ids]
    coords = [np.stack(index[i], axis=1).astype(float) for i in ids]
    table = pd.DataFrame({
        "region": ids.astype(np.int64),
        "source": [(sources or {}).get(int(i), THRESHOLD) for i in ids],
        "frame": pd.array([int(c[0, 0]) + first_frame for c in coords] if labels.ndim == 3
                          else [pd.NA] * len(ids), dtype="Int64"),
        "area_um2": area_px * (pixel_size_nm / 1000.0) ** 2,
        "mean_std": [float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
                     for v in std_values],
        "max_std": [float(np.nanmax(v)) if np.isfinite(v).any() else np.nan
                    for v in std_values],
        "y_nm": [px_to_nm(pixel_centre(c[:, -2].mean()), pixel_size_nm) for c in coords],
        "x_nm": [px_to_nm(pixel_centre(c[:, -1].mean()), pixel_size_nm) for c in coords],
    })
    counts = np.zeros(len(ids), dtype=np.int64)
    medians = np.full(len(ids), np.nan)
    if positions is not None and len(positions):
        found = _labels_at(labels, np.asarray(positions, dtype=float))
        row_of = {int(i): k for k, i in enumerate(ids)}
        values = (np.full(len(found), np.nan) if uncertainty is None
                  else np.asarray(uncertainty, dtype=float))
        for label in np.unique(found[found > 0]):
            k = row_of[int(label)]
            inside = values[found == label]
            counts[k] = inside.size
            if np.isfinite(inside).any():
                medians[k] = float(np.nanmedian(inside))
    table["localizations"] = counts
    table["median_uncertainty_nm"] = medians
    return table[columns]


def write_region_table(path: PathLike, table: pd.DataFrame) -> Path:
    """Write region statistics as CSV (quoted header and text, frames from 1), atomically."""
    out = pd.DataFrame({header: table[column] for column, header in TABLE_COLUMNS.items()
                        if column in table.columns})
    if "frame" in out.columns:
        out["frame"] = to_user_frame(pd.array(table["frame"], dtype="Int64"))
    with atomic_write(path) as temporary:  # header and text quoted, numbers not
        out.to_csv(temporary, index=False, na_rep="NaN", lineterminator="\n", float_format="%.6g",
                   quoting=csv.QUOTE_NONNUMERIC)
    return Path(path)
