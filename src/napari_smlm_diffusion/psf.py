"""Pixelated (erf-integrated) isotropic Gaussian PSF and the expected image of emitters.

All functions here work in camera-pixel units: pixel (r, c) covers [c, c+1) x [r, r+1), so a
position u (x or y) in pixels is measured from the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

SQRT2 = np.sqrt(2.0)


def pixel_integrals(centres: np.ndarray, sigma: float | np.ndarray, n_pixels: int) -> np.ndarray:
    """Fraction of a 1D Gaussian falling in each pixel (eq. 2 of the reference paper).

    Parameters
    ----------
    centres : array, shape (n,)
        Emitter coordinates along one axis, in pixels.
    sigma : float or array, shape (n,)
        Gaussian standard deviation in pixels.
    n_pixels : int
        Number of pixels along the axis.

    Returns
    -------
    array, shape (n, n_pixels)
        ``0.5 * (erf((k + 1 - u0) / (sqrt2 s)) - erf((k - u0) / (sqrt2 s)))`` for k = 0..n-1.
    """
    centres = np.asarray(centres, dtype=np.float64).reshape(-1, 1)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1, 1)
    edges = np.arange(n_pixels + 1, dtype=np.float64)[None, :]
    cdf = 0.5 * erf((edges - centres) / (SQRT2 * sigma))
    return np.diff(cdf, axis=1)


def expected_image(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    photons: np.ndarray | float,
    sigma: float | np.ndarray,
    background: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Expected photons per pixel of a set of emitters plus background.

    Parameters
    ----------
    shape : (rows, cols)
        Image size in pixels.
    x, y : arrays, shape (n,)
        Emitter positions in pixels (x along columns, y along rows).
    photons : float or array, shape (n,)
        Total photons of each emitter.
    sigma : float or array
        PSF standard deviation in pixels.
    background : float or array broadcastable to ``shape``
        Background photons per pixel.

    Returns
    -------
    array, shape ``shape``, float64
    """
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.atleast_1d(np.asarray(y, dtype=np.float64))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    rows, cols = shape
    image = np.zeros(shape, dtype=np.float64) + background
    if x.size == 0:
        return image
    weights = np.broadcast_to(np.asarray(photons, dtype=np.float64), x.shape)
    sigma_arr = np.broadcast_to(np.asarray(sigma, dtype=np.float64), x.shape)
    along_x = pixel_integrals(x, sigma_arr, cols)
    along_y = pixel_integrals(y, sigma_arr, rows)
    image += (along_y * weights[:, None]).T @ along_x
    return image
