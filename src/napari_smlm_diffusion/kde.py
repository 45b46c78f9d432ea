"""Kernel density estimates (KDE) on an upsampled grid, and peaks back to coordinates.

A KDE grid with pixel size ``p`` nm has fine pixel (r, c) covering [c p, (c+1) p) x [r p, (r+1) p)
in nm, its centre at ((c + 0.5) p, (r + 0.5) p). Each emitter contributes an unnormalised Gaussian
``exp(-d^2 / (2 (s p)^2))`` with ``s`` (``sigma_px``) in fine pixels, so an isolated emitter peaks
at about 1 and integrates to ``2 pi s^2``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .geometry import nm_to_px, pixel_centre, px_to_nm

DEFAULT_KDE_SIGMA_PX = 1.0


def gaussian_profiles(
    centres_nm: np.ndarray, n_pixels: int, pixel_size_nm: float, sigma_px: float
) -> np.ndarray:
    """1D Gaussian profiles sampled at fine pixel centres, shape (n, n_pixels)."""
    centres_px = nm_to_px(centres_nm, pixel_size_nm).reshape(-1, 1)
    grid = pixel_centre(np.arange(n_pixels))[None, :]
    return np.exp(-0.5 * ((grid - centres_px) / sigma_px) ** 2)


def render_kde(
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    shape: tuple[int, int],
    pixel_size_nm: float,
    sigma_px: float = DEFAULT_KDE_SIGMA_PX,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Render a KDE of point coordinates on a grid.

    Parameters
    ----------
    x_nm, y_nm : arrays, shape (n,)
        Coordinates in nm (x along columns, y along rows).
    shape : (rows, cols)
        KDE grid size.
    pixel_size_nm : float
        Size of one KDE pixel in nm.
    sigma_px : float
        Kernel standard deviation in KDE pixels.
    weights : array, shape (n,), optional
        Peak height of each kernel (default 1).

    Returns
    -------
    array, shape ``shape``, float32
    """
    x_nm = np.atleast_1d(np.asarray(x_nm, dtype=np.float64))
    y_nm = np.atleast_1d(np.asarray(y_nm, dtype=np.float64))
    if x_nm.size == 0:
        return np.zeros(shape, dtype=np.float32)
    along_x = gaussian_profiles(x_nm, shape[1], pixel_size_nm, sigma_px)
    along_y = gaussian_profiles(y_nm, shape[0], pixel_size_nm, sigma_px)
    if weights is not None:
        along_y = along_y * np.asarray(weights, dtype=np.float64)[:, None]
    return (along_y.T @ along_x).astype(np.float32)


def _parabola_offset(left: np.ndarray, centre: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Vertex offset of the parabola through log-values at -1, 0, +1 (exact for Gaussians)."""
    floor = np.float64(1e-6)
    lm, l0, lp = (np.log(np.maximum(v.astype(np.float64), floor)) for v in (left, centre, right))
    curvature = lm - 2.0 * l0 + lp
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curvature < 0, 0.5 * (lm - lp) / curvature, 0.0)
    return np.clip(offset, -0.5, 0.5)


def _peak_pixels(kde: np.ndarray, threshold: float, distance: int) -> tuple[np.ndarray, ...]:
    """Rows and columns of the pixels above ``threshold`` that are maxima of their (2 d + 1)^2
    neighbourhood, one pixel per plateau of equal values: a pixel must exceed the neighbours
    before it in row-major order and equal or exceed the rest (row-major order)."""
    padded = np.pad(kde, distance, mode="constant", constant_values=-np.inf)
    rows, cols = np.nonzero(kde > threshold)
    centre = kde[rows, cols]
    keep = np.ones(rows.size, dtype=bool)
    for dr in range(-distance, distance + 1):
        for dc in range(-distance, distance + 1):
            if dr == 0 and dc == 0:
                continue
            neighbour = padded[rows + distance + dr, cols + distance + dc]
            earlier = dr < 0 or (dr == 0 and dc < 0)
            keep &= centre > neighbour if earlier else centre >= neighbour
    return rows[keep], cols[keep]


def _detect(kde: np.ndarray, threshold: float, min_distance_px: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Zero-padded KDE, padded peak rows and columns, and sub-pixel offsets (dx, dy) packed as
    one array (2, n)."""
    kde = np.asarray(kde, dtype=np.float32)
    if kde.ndim != 2:
        raise ValueError(f"find_peaks expects a 2D KDE, got shape {kde.shape}")
    padded = np.pad(kde, 1, mode="constant")
    rows, cols = _peak_pixels(kde, threshold, int(min_distance_px))
    pr, pc = rows + 1, cols + 1
    centre = padded[pr, pc]
    offsets = np.stack([_parabola_offset(padded[pr, pc - 1], centre, padded[pr, pc + 1]),
                        _parabola_offset(padded[pr - 1, pc], centre, padded[pr + 1, pc])])
    return padded, pr, pc, offsets


def peak_positions(
    kde: np.ndarray, pixel_size_nm: float, threshold: float = 0.3, min_distance_px: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions ``x_nm``, ``y_nm`` and heights (``score``) of the peaks of a KDE, as
    :func:`find_peaks` finds them, without building a table."""
    padded, pr, pc, (dx, dy) = _detect(kde, threshold, min_distance_px)
    x_nm, y_nm = _peak_nm(pr, pc, dx, dy, pixel_size_nm)
    return x_nm, y_nm, padded[pr, pc].astype(np.float64)


def _peak_nm(pr: np.ndarray, pc: np.ndarray, dx: np.ndarray, dy: np.ndarray,
             pixel_size_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions in nm of peaks at padded (1-pixel border) rows and columns plus offsets."""
    return (px_to_nm(pixel_centre(pc - 1) + dx, pixel_size_nm),
            px_to_nm(pixel_centre(pr - 1) + dy, pixel_size_nm))


def find_peaks(
    kde: np.ndarray,
    pixel_size_nm: float,
    threshold: float = 0.3,
    min_distance_px: int = 1,
    frame: int = 0,
) -> pd.DataFrame:
    """Detect local maxima of a KDE and refine them to sub-pixel coordinates.

    A pixel is a peak when it is the maximum of its (2 d + 1)^2 neighbourhood (d =
    ``min_distance_px``) and exceeds ``threshold``; of equal maxima (an emitter on a pixel edge
    or corner gives a plateau) only the first in row-major order counts. Positions are refined
    by a parabola through the log-values of the neighbours along each axis, which is exact for
    an isolated Gaussian kernel.

    Returns
    -------
    DataFrame with columns frame, x_nm, y_nm, score (peak height), mass (sum over the 3x3
    neighbourhood divided by the 3x3 sum of a unit kernel: about 1 per emitter).
    """
    kde = np.asarray(kde, dtype=np.float32)
    if kde.ndim != 2:
        raise ValueError(f"find_peaks expects a 2D KDE, got shape {kde.shape}")
    rows, cols = _peak_pixels(kde, threshold, int(min_distance_px))
    padded = np.pad(kde, 1, mode="constant")
    windows = np.stack([padded[rows + 1 + i, cols + 1 + j]
                        for i in (-1, 0, 1) for j in (-1, 0, 1)], axis=-1)
    return peak_table(windows.reshape(-1, 3, 3), rows, cols, pixel_size_nm, frame)


def peak_table(windows: np.ndarray, rows: np.ndarray, cols: np.ndarray, pixel_size_nm: float,
               frame: int = 0) -> pd.DataFrame:
    """The :func:`find_peaks` table of peaks at pixels (``rows``, ``cols``) of a KDE, from the
    float32 3x3 windows around them (zero outside the KDE), shape (n, 3, 3)."""
    windows = np.asarray(windows, dtype=np.float32).reshape(-1, 3, 3)
    centre = windows[:, 1, 1]
    dx = _parabola_offset(windows[:, 1, 0], centre, windows[:, 1, 2])
    dy = _parabola_offset(windows[:, 0, 1], centre, windows[:, 2, 1])
    total = sum(windows[:, i, j] for i in range(3) for j in range(3))
    unit = render_kde([1.5], [1.5], (3, 3), 1.0).sum()
    x_nm, y_nm = _peak_nm(np.asarray(rows) + 1, np.asarray(cols) + 1, dx, dy, pixel_size_nm)
    return pd.DataFrame(
        {
            "frame": np.full(len(centre), frame, dtype=np.int64),
            "x_nm": x_nm,
            "y_nm": y_nm,
            "score": centre.astype(np.float64),
            "mass": (total / unit).astype(np.float64),
        }
    )


def find_peaks_in_frames(kdes: np.ndarray, pixel_size_nm: float,
                         threshold: float) -> pd.DataFrame:
    """Peaks of a stack of KDEs as one table (frame index = position in the stack)."""
    return pd.concat([find_peaks(k, pixel_size_nm, threshold, frame=i)
                      for i, k in enumerate(kdes)], ignore_index=True)
