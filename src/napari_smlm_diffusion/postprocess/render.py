"""Render localizations as an image: a histogram, or each localization as a Gaussian.

The image follows the project's pixel-grid convention: pixel ``(r, c)`` covers
``[c*p, (c+1)*p) x [r*p, (r+1)*p)`` nm for pixel size ``p``, the origin being the top-left
corner of the top-left pixel, so an image rendered at the camera pixel size lies exactly on the
raw stack (and one rendered at ``p = s/u`` on its ``u``-times upsampled grid).

Gaussians are integrated over each pixel (differences of the normal CDF along x and y), so a
localization inside the image adds exactly 1 to the image sum whatever its sigma (apart from
the part of its Gaussian falling outside the image). They are splatted in chunks, grouped by
kernel size, with separable weights: the cost is linear in the number of localizations times
the kernel area.
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
_CHUNK_ENTRIES = 4_000_000  # pixel weights per splat chunk (bounds the memory)


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


def _axis_weights(
    position: np.ndarray, sigma: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray]:
    """First pixel index and normalised pixel-integrated Gaussian weights (n, 2*half+1),
    positions and sigmas in pixels."""
    first = np.floor(position).astype(np.intp) - half
    edges = first[:, None] + np.arange(2 * half + 2)[None, :]
    cdf = ndtr((edges - position[:, None]) / sigma[:, None])
    weights = np.diff(cdf, axis=1)
    weights /= cdf[:, -1:] - cdf[:, :1]
    return first, weights


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
    rows, cols = shape
    image = np.zeros(rows * cols)
    half = np.ceil(TRUNCATE * np.maximum(sx, sy)).astype(np.intp)
    for size in np.unique(half):
        group = np.flatnonzero(half == size)
        k = 2 * int(size) + 1
        step = max(1, _CHUNK_ENTRIES // (k * k))
        for start in range(0, group.size, step):
            sel = group[start : start + step]
            c0, wx = _axis_weights(x[sel], sx[sel], int(size))
            r0, wy = _axis_weights(y[sel], sy[sel], int(size))
            cc = c0[:, None] + np.arange(k)[None, :]
            rr = r0[:, None] + np.arange(k)[None, :]
            weights = wy[:, :, None] * wx[:, None, :]
            valid = ((rr >= 0) & (rr < rows))[:, :, None] & ((cc >= 0) & (cc < cols))[:, None, :]
            index = rr[:, :, None] * cols + cc[:, None, :]
            image += np.bincount(index[valid], weights[valid], minlength=rows * cols)
    return image.reshape(rows, cols)


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
