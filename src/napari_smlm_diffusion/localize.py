"""Localization tables from KDEs: peaks, photometry on the raw frame, precision estimates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.linalg import solve
from scipy.sparse.linalg import lsqr

from .camera import Camera
from .kde import find_peaks
from .psf import mortensen_precision
from .refine import ITERATIONS, joint_fit, psf_jacobian

DENSE_SOLVE_MAX = 2000


def photometry(
    photons: np.ndarray, x_nm: np.ndarray, y_nm: np.ndarray, pixel_size_nm: float,
    sigma_nm: float,
) -> tuple[np.ndarray, float, float]:
    """Joint least-squares photon counts of all emitters of one frame and a flat background.

    Parameters
    ----------
    photons : array (rows, cols)
        The frame in photons.
    x_nm, y_nm : arrays
        Emitter positions in nm.
    pixel_size_nm, sigma_nm : float
        Camera pixel size and PSF standard deviation.

    Returns
    -------
    (photons per emitter, background per pixel, rms residual per pixel), in photons
    """
    signal = np.asarray(photons, dtype=np.float64).ravel()
    n = len(x_nm)
    jacobian = psf_jacobian(np.asarray(x_nm) / pixel_size_nm, np.asarray(y_nm) / pixel_size_nm,
                            np.ones(n), sigma_nm / pixel_size_nm, photons.shape)
    matrix = jacobian[:, [*range(2, 3 * n, 3), 3 * n]]  # unit-photon PSFs, then background
    if matrix.shape[1] <= DENSE_SOLVE_MAX:
        normal = (matrix.T @ matrix).toarray()
        normal[np.diag_indices_from(normal)] += 1e-9 * normal.diagonal().max()
        solution = solve(normal, matrix.T @ signal, assume_a="pos")
    else:
        solution = lsqr(matrix, signal, atol=1e-7, btol=1e-7, iter_lim=500)[0]
    residual = signal - matrix @ solution
    return np.maximum(solution[:-1], 0.0), float(solution[-1]), float(np.std(residual))


def localizations_from_kde(
    kde: np.ndarray,
    frame_photons: np.ndarray,
    frame_index: int,
    camera: Camera,
    sigma_nm: float,
    threshold: float,
    upsampling: int = 4,
    refine: bool = False,
) -> pd.DataFrame:
    """Localizations of one frame: KDE peaks, photometry and precision on the raw frame.

    Peaks of the KDE give the emitters and their positions; linear photometry gives photons and
    background; the inverse information matrix of all emitters of the frame together gives each
    one's per-axis precision (overlaps included). With ``refine`` the positions and photons are
    also fitted jointly on the raw frame (measured: helps little and costs time, see the
    benchmark). Where the fit is rejected, the KDE position is kept with the Mortensen precision.

    Returns the package's localization columns: frame, x_nm, y_nm, sigma_nm, photons,
    background, bkgstd, uncertainty_nm, uncertainty_x_nm, uncertainty_y_nm, score.
    """
    pixel = camera.pixel_size
    table = find_peaks(kde, pixel / upsampling, threshold, frame=frame_index).drop(
        columns=["mass"])
    counts, background, spread = photometry(
        frame_photons, table.x_nm.to_numpy(), table.y_nm.to_numpy(), pixel, sigma_nm
    )
    fallback = mortensen_precision(np.maximum(counts, 1.0), max(background, 0.0), sigma_nm,
                                   pixel, emccd=camera.is_emccd)
    std_x = std_y = np.asarray(fallback, dtype=np.float64)
    if len(table):
        fit = joint_fit(frame_photons, table.x_nm.to_numpy() / pixel,
                        table.y_nm.to_numpy() / pixel, counts, background, sigma_nm / pixel,
                        noise_gain=camera.excess_noise**2 / camera.quantum_efficiency,
                        read_var=camera.read_noise_photons**2,
                        iterations=ITERATIONS if refine else 0)
        table["x_nm"], table["y_nm"] = fit.x * pixel, fit.y * pixel
        counts, background = fit.photons, fit.background
        std_x = np.where(fit.fitted, fit.std_x * pixel, fallback)
        std_y = np.where(fit.fitted, fit.std_y * pixel, fallback)
    table["photons"] = counts
    table["sigma_nm"] = sigma_nm
    table["background"] = background
    table["bkgstd"] = spread
    table["uncertainty_x_nm"] = std_x
    table["uncertainty_y_nm"] = std_y
    table["uncertainty_nm"] = np.sqrt(0.5 * (std_x**2 + std_y**2))
    return table
