"""Render localizations as an image: a histogram, or each localization as a Gaussian.

The image follows the project's pixel-grid convention: pixel ``(r, c)`` covers
``[c*p, (c+1)*p) x [r*p, (r+1)*p)`` nm for pixel size ``p``, the origin being the top-left
corner of the top-left pixel, so an image rendered at the camera pixel size lies exactly on the
raw stack (and one rendered at ``p = s/u`` on its ``u``-times upsampled grid).

Gaussians are integrated over each pixel (differences of the normal CDF along x and y), so a
localization inside the image adds exactly 1 to the image sum whatever its sigma (apart from
the part of its Gaussian falling outside the image; a fixed blur uses weights tabulated at
1/1000 pixel). They are splatted tile by tile: the
separable weights of the localizations centred in one tile form two dense matrices whose product
is the tile image (BLAS), so the cost is linear in the number of localizations times about
four kernel areas, at matrix-product speed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.special import ndtr

from ..metrics import _uncertainties
from .common import PostprocessError, coordinates

#: Gaussians are cut at this many sigmas (the cut-off mass, 6e-5, is renormalised).
TRUNCATE = 4.0
_TILE_CHUNK = 50_000  # localizations per tile product (bounds the memory)
_TABLE_STEPS = 1000  # sub-pixel steps of the tabulated weights of a fixed blur


def image_shape(x_nm: np.ndarray, y_nm: np.ndarray, pixel_size_nm: float) -> tuple[int, int]:
    """(rows, cols) of the smallest image from the origin that holds all coordinates."""
    rows = max(1, math.floor(float(np.max(y_nm, initial=0.0)) / pixel_size_nm) + 1)
    cols = max(1, math.floor(float(np.max(x_nm, initial=0.0)) / pixel_size_nm) + 1)
    return rows, cols


def render_histogram(
    x_nm: np.ndarray, y_nm: np.ndarray, pixel_size_nm: float, shape: tuple[int, int],
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Count (or sum ``weights`` of) the localizations in each pixel; outside ones are dropped.

    Returns
    -------
    numpy.ndarray of float64, shape ``shape``
    """
    rows, cols = shape
    c = np.floor(np.asarray(x_nm, dtype=np.float64) / pixel_size_nm)
    r = np.floor(np.asarray(y_nm, dtype=np.float64) / pixel_size_nm)
    inside = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
    index = r[inside].astype(np.intp) * cols + c[inside].astype(np.intp)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[inside]
    return np.bincount(index, w, minlength=rows * cols).reshape(rows, cols)


def _window_weights(offset: np.ndarray, sigma: np.ndarray, half: int) -> np.ndarray:
    """Normalised pixel-integrated Gaussian weights (n, 2*half+1) of the pixels ``-half..half``
    around the one holding the centre, ``offset`` in [0, 1) pixels into it."""
    edges = np.arange(-half, half + 2)[None, :] - offset[:, None]
    cdf = ndtr(edges / sigma[:, None])
    weights = np.diff(cdf, axis=1)
    weights /= cdf[:, -1:] - cdf[:, :1]
    return weights


def _axis_weights(
    position: np.ndarray, sigma: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """First pixel index and weights (see :func:`_window_weights`), positions and sigmas in
    pixels. One sigma for all: the weights are tabulated at 1/:data:`_TABLE_STEPS` pixel."""
    floor = np.floor(position)
    offset = position - floor
    first = floor.astype(np.intp) - half
    if sigma.size > _TABLE_STEPS and np.all(sigma == sigma[0]):
        grid = (np.arange(_TABLE_STEPS) + 0.5) / _TABLE_STEPS
        table = _window_weights(grid, np.full(_TABLE_STEPS, sigma[0]), half)
        return first, table[np.minimum((offset * _TABLE_STEPS).astype(np.intp),
                                        _TABLE_STEPS - 1)]
    return first, _window_weights(offset, sigma, half)


def _bucket(half: np.ndarray) -> np.ndarray:
    """Kernel half-widths rounded up to a power of two (few groups, each one tile shape)."""
    half = np.maximum(half, 1)
    return (2 ** np.ceil(np.log2(half))).astype(np.intp)


def _splat_tiles(image, x, y, sx, sy, half: int) -> None:
    """Add unit-mass Gaussians of kernel half-width ``half`` to ``image`` (rows, cols), tile by
    tile: the Gaussians whose centre pixel lies in one tile of ``t`` x ``t`` pixels cover an
    ``e = t + 2 half`` square, which is ``wy.T @ wx`` (one BLAS product) of their separable
    weights ``wy``, ``wx`` (n_tile, e)."""
    rows, cols = image.shape
    t = max(8, 2 * half)
    e = t + 2 * half
    k = 2 * half + 1
    c0, wx = _axis_weights(x, sx, half)
    r0, wy = _axis_weights(y, sy, half)
    tile_r = np.floor_divide(r0 + half, t)
    tile_c = np.floor_divide(c0 + half, t)
    key = tile_r * (cols // t + 2) + tile_c
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    for group in np.split(order, bounds):
        for chunk in np.array_split(group, -(-group.size // _TILE_CHUNK)):
            top = int(tile_r[chunk[0]]) * t - half
            left = int(tile_c[chunk[0]]) * t - half
            n = chunk.size
            span = np.arange(k)[None, :]
            ay = np.zeros((n, e))
            ax = np.zeros((n, e))
            ay[np.arange(n)[:, None], (r0[chunk] - top)[:, None] + span] = wy[chunk]
            ax[np.arange(n)[:, None], (c0[chunk] - left)[:, None] + span] = wx[chunk]
            tile = ay.T @ ax
            r_lo, c_lo = max(top, 0), max(left, 0)
            r_hi, c_hi = min(top + e, rows), min(left + e, cols)
            if r_lo < r_hi and c_lo < c_hi:
                image[r_lo:r_hi, c_lo:c_hi] += tile[r_lo - top : r_hi - top,
                                                    c_lo - left : c_hi - left]


def render_gaussians(
    x_nm: np.ndarray,
    y_nm: np.ndarray,
    sigma_x_nm: np.ndarray,
    sigma_y_nm: np.ndarray,
    pixel_size_nm: float,
    shape: tuple[int, int],
) -> np.ndarray:
    """Sum of pixel-integrated 2D Gaussians, one per localization, each of unit mass.

    Parameters
    ----------
    x_nm, y_nm : ndarray
        Positions, nm.
    sigma_x_nm, sigma_y_nm : ndarray or float
        Gaussian sigma per localization (or one for all), nm, positive.
    pixel_size_nm : float
        Output pixel size, nm.
    shape : (int, int)
        Output (rows, cols).

    Returns
    -------
    numpy.ndarray of float64, shape ``shape``
    """
    x, y, sx, sy = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) / pixel_size_nm
                                         for v in (x_nm, y_nm, sigma_x_nm, sigma_y_nm)))
    if not (np.all(sx > 0) and np.all(sy > 0)):
        raise PostprocessError("rendering needs positive, finite blur sigmas")
    image = np.zeros(shape)
    # localizations whose kernel cannot reach the image are dropped first
    reach = TRUNCATE * np.maximum(sx, sy) + 1
    near = ((x > -reach) & (x < shape[1] + reach) & (y > -reach) & (y < shape[0] + reach))
    x, y, sx, sy = x[near], y[near], sx[near], sy[near]
    half = _bucket(np.ceil(TRUNCATE * np.maximum(sx, sy)))
    for size in np.unique(half):
        group = half == size
        _splat_tiles(image, x[group], y[group], sx[group], sy[group], int(size))
    return image


def render(
    table: pd.DataFrame,
    pixel_size_nm: float,
    blur: str | float | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Render a localization table.

    Parameters
    ----------
    table : DataFrame
        Localizations (``x_nm``, ``y_nm``; for ``blur="uncertainty"`` also ``uncertainty_nm``
        or ``uncertainty_x_nm``/``uncertainty_y_nm``).
    pixel_size_nm : float
        Output pixel size, nm.
    blur : None, "uncertainty" or float
        None or 0: histogram; ``"uncertainty"``: each localization as a Gaussian of its own
        per-axis uncertainty; a number: Gaussians of that fixed sigma in nm.
    shape : (int, int), optional
        Output (rows, cols); default: from the origin to the largest coordinate.

    Returns
    -------
    numpy.ndarray of float32
        Localizations per pixel (summing to the number of localizations inside).
    """
    if not (math.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise PostprocessError(f"the pixel size must be a positive number of nm, "
                               f"got {pixel_size_nm}")
    x, y, _ = coordinates(table, "rendering")
    shape = shape or image_shape(x, y, pixel_size_nm)
    if blur is None or (not isinstance(blur, str) and blur == 0):
        return render_histogram(x, y, pixel_size_nm, shape).astype(np.float32)
    if isinstance(blur, str):
        if blur != "uncertainty":
            raise PostprocessError(f"blur must be 'uncertainty' or a sigma in nm, got {blur!r}")
        sigmas = _uncertainties(table)
        if sigmas is None:
            raise PostprocessError("uncertainty rendering needs the column 'uncertainty [nm]' "
                                   "(or per-axis uncertainties); use a fixed blur in nm instead")
        sx, sy = sigmas
        bad = int(np.count_nonzero(~((sx > 0) & (sy > 0) & np.isfinite(sx) & np.isfinite(sy))))
        if bad:
            raise PostprocessError(f"uncertainty rendering: {bad} localization(s) have a missing "
                                   "or non-positive uncertainty; use a fixed blur in nm instead")
    else:
        if not (math.isfinite(blur) and blur > 0):
            raise PostprocessError(f"the blur must be a positive number of nm, got {blur}")
        sx = sy = float(blur)
    return render_gaussians(x, y, sx, sy, pixel_size_nm, shape).astype(np.float32)
