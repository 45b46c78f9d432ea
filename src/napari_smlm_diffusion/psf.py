"""Pixelated (erf-integrated) isotropic Gaussian PSF and the expected image of emitters.

All functions here work in camera-pixel units: pixel (r, c) covers [c, c+1) x [r, r+1), so a
position u (x or y) in pixels is measured from the top-left corner of the top-left pixel.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf, spence

SQRT2 = np.sqrt(2.0)
SQRT2PI = np.sqrt(2.0 * np.pi)


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


def pixel_profiles(
    centres: np.ndarray, first_pixel: np.ndarray, width: int, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel integrals of 1D Gaussians over windows of pixels, and their centre derivatives.

    Emitter i covers pixels ``first_pixel[i] .. first_pixel[i] + width - 1``. The derivative of
    ``Phi((k + 1 - u0) / s) - Phi((k - u0) / s)`` with respect to ``u0`` is the difference of the
    Gaussian densities at the two pixel edges. Returns two arrays of shape (n, width).
    """
    edges = np.asarray(first_pixel)[:, None] + np.arange(width + 1)[None, :]
    z = (edges - np.asarray(centres, dtype=np.float64)[:, None]) / sigma
    cdf = 0.5 * erf(z / SQRT2)
    density = np.exp(-0.5 * z * z) / (SQRT2PI * sigma)
    return np.diff(cdf, axis=1), density[:, :-1] - density[:, 1:]


def _model_and_jacobian(
    x: float, y: float, photons: float, background: float, sigma: float, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Expected photons per pixel (flattened) and its Jacobian, shape (4, pixels)."""
    rows, cols = shape
    (ex,), (dex,) = pixel_profiles(np.array([x]), np.array([0]), cols, sigma)
    (ey,), (dey,) = pixel_profiles(np.array([y]), np.array([0]), rows, sigma)
    jacobian = np.empty((4, rows, cols))
    np.multiply(ey[:, None], dex, out=jacobian[0])
    np.multiply(dey[:, None], ex, out=jacobian[1])
    np.multiply(ey[:, None], ex, out=jacobian[2])
    jacobian[:2] *= photons
    jacobian[3] = 1.0
    jacobian = jacobian.reshape(4, rows * cols)
    return photons * jacobian[2] + background, jacobian


def _fisher_window(
    x: float, y: float, sigma: float, shape: tuple[int, int] | None
) -> tuple[float, float, tuple[int, int]]:
    """Emitter coordinates and image shape used for the Fisher information."""
    if shape is not None:
        return float(x), float(y), (int(shape[0]), int(shape[1]))
    half = int(np.ceil(4.0 * sigma))
    size = 2 * half + 1
    return float(x - np.floor(x) + half), float(y - np.floor(y) + half), (size, size)


def fisher_information(
    x: float,
    y: float,
    photons: float,
    background: float,
    sigma: float,
    shape: tuple[int, int] | None = None,
    read_noise_photons: float = 0.0,
    excess_noise: float = 1.0,
) -> np.ndarray:
    """Fisher information of one emitter under the Poisson-normal model (eq. 14).

    ``I_ij = sum_k (d omega_k / d theta_i)(d omega_k / d theta_j) / (F^2 (omega_k + s^2))`` for
    theta = (x, y, photons, background), with omega the erf-integrated expected image.

    Parameters
    ----------
    x, y : float
        Emitter position in pixels (pixel (r, c) covers [c, c+1) x [r, r+1)).
    photons : float
        Total photons of the emitter.
    background : float
        Background photons per pixel.
    sigma : float
        PSF standard deviation in pixels.
    shape : (rows, cols), optional
        Image on which the emitter is measured, with (x, y) relative to its corner. By default a
        square window of ``2 * ceil(4 sigma) + 1`` pixels centred on the pixel holding the emitter
        (the sub-pixel position is kept).
    read_noise_photons : float
        Read noise s in photons rms; it adds s^2 to the Poisson mean of every pixel.
    excess_noise : float
        Excess noise factor F (sqrt 2 for an EMCCD); the information is divided by F^2.

    Returns
    -------
    array, shape (4, 4)
    """
    x, y, shape = _fisher_window(x, y, sigma, shape)
    omega, jacobian = _model_and_jacobian(x, y, photons, background, sigma, shape)
    weights = 1.0 / (omega + read_noise_photons**2)
    return (jacobian * weights) @ jacobian.T / excess_noise**2


def crlb(
    x: float,
    y: float,
    photons: float,
    background: float,
    sigma: float,
    shape: tuple[int, int] | None = None,
    read_noise_photons: float = 0.0,
    excess_noise: float = 1.0,
) -> np.ndarray:
    """Cramer-Rao lower bound on the variances of (x, y, photons, background).

    Same arguments as :func:`fisher_information`; returns the diagonal of its inverse, shape (4,),
    in pixels^2, pixels^2, photons^2 and photons^2.
    """
    information = fisher_information(
        x, y, photons, background, sigma, shape, read_noise_photons, excess_noise
    )
    return np.diag(np.linalg.inv(information)).copy()


def crlb_xy_nm(
    x: float,
    y: float,
    photons: float,
    background: float,
    sigma: float,
    pixel_size: float,
    **kw: object,
) -> tuple[float, float]:
    """Best achievable localisation precision (sqrt of the CRLB) along x and y, in nm.

    ``sigma`` is in pixels and ``pixel_size`` in nm per pixel; further keyword arguments go to
    :func:`crlb`.
    """
    variances = crlb(x, y, photons, background, sigma, **kw)
    return float(np.sqrt(variances[0]) * pixel_size), float(np.sqrt(variances[1]) * pixel_size)


def mortensen_precision(
    photons: float | np.ndarray,
    background: float | np.ndarray,
    sigma: float,
    pixel_size: float = 1.0,
    emccd: bool = False,
) -> float | np.ndarray:
    """Closed-form MLE localisation precision per axis of Mortensen et al. (2010).

    ``var = F * sigma_a^2 / N / (1 + int_0^1 ln t / (1 + N a^2 t / (2 pi sigma_a^2 b)) dt)`` with
    ``sigma_a^2 = sigma^2 + a^2 / 12``, a the pixel size, b the background photons per pixel and
    F = 2 for an EMCCD (1 otherwise). The integral is evaluated exactly as Li2(-c) / c with
    c = N a^2 / (2 pi sigma_a^2 b), so arrays of emitters are handled at once.

    Parameters
    ----------
    photons : float or array
        Total photons N of each emitter (> 0).
    background : float or array
        Background photons per pixel (>= 0).
    sigma : float
        PSF standard deviation, same length unit as ``pixel_size``.
    pixel_size : float
        Pixel size a.
    emccd : bool
        Apply the EMCCD excess noise (F = 2).

    Returns
    -------
    float or array
        Standard deviation of the position estimate, in the length unit of ``sigma``.
    """
    photons = np.asarray(photons, dtype=np.float64)
    background = np.asarray(background, dtype=np.float64)
    sigma_a2 = sigma**2 + pixel_size**2 / 12.0
    with np.errstate(divide="ignore", invalid="ignore"):
        c = photons * pixel_size**2 / (2.0 * np.pi * sigma_a2 * background)
        integral = np.where(background > 0, spence(1.0 + c) / c, 0.0)  # Li2(-c) / c
    factor = 2.0 if emccd else 1.0
    result = np.sqrt(factor * sigma_a2 / photons / (1.0 + integral))
    return float(result) if result.ndim == 0 else result
