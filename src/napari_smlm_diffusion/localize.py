"""Localization tables from KDEs: peaks, photometry on the raw frame, precision estimates."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import solve
from scipy.sparse.linalg import lsqr
from threadpoolctl import ThreadpoolController

from .camera import Camera
from .geometry import UPSAMPLING
from .kde import peak_positions
from .precision import bounded_precision, nearest_neighbour_distances
from .psf import mortensen_precision
from .refine import ITERATIONS, PsfJacobian, joint_fit

DENSE_SOLVE_MAX = 2000
#: Columns of a localization table, in order: ``frame`` and ``resolved`` are int64, the others
#: float64.
COLUMNS = ("frame", "x_nm", "y_nm", "score", "photons", "sigma_nm", "background", "bkgstd",
           "uncertainty_x_nm", "uncertainty_y_nm", "uncertainty_nm", "resolved")
INTEGER_COLUMNS = ("frame", "resolved")

Columns = dict[str, np.ndarray]


@cache
def _blas_libraries() -> ThreadpoolController:
    return ThreadpoolController()


class _SharedBlasLimit:
    """One BLAS limit shared by every job that asks for it: the first to enter sets it, the last
    to leave restores the setting found before (thread-safe), so jobs that overlap in time never
    leave BLAS on one thread, nor lift the limit while another job still relies on it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._limiter: Any = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._limiter = _blas_libraries().limit(limits=1, user_api="blas")
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._limiter.restore_original_limits()
                    self._limiter = None


_SHARED_BLAS_LIMIT = _SharedBlasLimit()


def single_threaded_blas() -> AbstractContextManager:
    """Context in which BLAS and LAPACK use one thread. The dense solves of localization are at
    most a few hundred wide: more threads gain little there, and when the other core is busy
    (the CNN, another job) their waiting made localization about ten times slower (measured).
    The limit is process-wide and reference-counted: it ends when the last overlapping job
    leaves."""
    return _SHARED_BLAS_LIMIT()


def photometry(
    photons: np.ndarray, x_nm: np.ndarray, y_nm: np.ndarray, pixel_size_nm: float,
    sigma_nm: float, jacobian: PsfJacobian | None = None,
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
    jacobian : PsfJacobian, optional
        Built for these positions (in pixels), the PSF sigma (in pixels) and the frame shape.

    Returns
    -------
    (photons per emitter, background per pixel, rms residual per pixel), in photons
    """
    signal = np.asarray(photons, dtype=np.float64).ravel()
    if jacobian is None:
        jacobian = PsfJacobian(np.asarray(x_nm) / pixel_size_nm, np.asarray(y_nm) / pixel_size_nm,
                               sigma_nm / pixel_size_nm, photons.shape)
    if len(x_nm) <= DENSE_SOLVE_MAX:
        normal = jacobian.gram()
        normal[np.diag_indices_from(normal)] += 1e-9 * normal.diagonal().max()  # coincident
        solution = solve(normal, jacobian.project(signal), assume_a="pos")
    else:  # large frames (or a threshold far too low): iterative, memory linear in n
        solution = lsqr(jacobian.unit_matrix(), signal, atol=1e-7, btol=1e-7, iter_lim=500)[0]
    residual = signal - jacobian.expected(solution[:-1], solution[-1])
    return np.maximum(solution[:-1], 0.0), float(solution[-1]), float(np.std(residual))


def _frame_columns(
    kde: np.ndarray, frame_photons: np.ndarray, frame_index: int, camera: Camera,
    sigma_nm: float, threshold: float, upsampling: int, refine: bool,
) -> Columns:
    """The columns (:data:`COLUMNS`) of one frame's localizations."""
    pixel = camera.pixel_size
    x_nm, y_nm, score = peak_positions(kde, pixel / upsampling, threshold)
    n = len(x_nm)
    jacobian = PsfJacobian(x_nm / pixel, y_nm / pixel, sigma_nm / pixel, frame_photons.shape)
    counts, background, spread = photometry(frame_photons, x_nm, y_nm, pixel, sigma_nm,
                                            jacobian)
    fallback = mortensen_precision(np.maximum(counts, 1.0), max(background, 0.0), sigma_nm,
                                   pixel, emccd=camera.is_emccd)
    std_x = std_y = np.asarray(fallback, dtype=np.float64)
    resolved = np.zeros(n, dtype=np.int64)
    if n:
        fit = joint_fit(frame_photons, x_nm / pixel, y_nm / pixel, counts, background,
                        sigma_nm / pixel,
                        noise_gain=camera.excess_noise**2 / camera.quantum_efficiency,
                        read_var=camera.read_noise_photons**2,
                        iterations=ITERATIONS if refine else 0, start_jacobian=jacobian)
        x_nm, y_nm = fit.x * pixel, fit.y * pixel
        counts, background = fit.photons, fit.background
        # where the fit was rejected, the Mortensen precision stands for both CRLBs
        joint_x, joint_y, single_x, single_y = (
            np.where(fit.fitted, value * pixel, fallback)
            for value in (fit.std_x, fit.std_y, fit.single_x, fit.single_y))
        std_x, std_y, resolved = bounded_precision(
            joint_x, joint_y, single_x, single_y, nearest_neighbour_distances(x_nm, y_nm),
            sigma_nm)
    return {
        "frame": np.full(n, frame_index, dtype=np.int64), "x_nm": x_nm, "y_nm": y_nm,
        "score": score, "photons": counts, "sigma_nm": np.full(n, sigma_nm, dtype=np.float64),
        "background": np.full(n, background, dtype=np.float64),
        "bkgstd": np.full(n, spread, dtype=np.float64),
        "uncertainty_x_nm": std_x, "uncertainty_y_nm": std_y,
        "uncertainty_nm": np.sqrt(0.5 * (std_x**2 + std_y**2)), "resolved": resolved,
    }


def _table(frames: list[Columns]) -> pd.DataFrame:
    """One table (columns :data:`COLUMNS`) from the columns of several frames."""
    return pd.DataFrame({
        name: np.concatenate([f[name] for f in frames]) if frames
        else np.empty(0, dtype=np.int64 if name in INTEGER_COLUMNS else np.float64)
        for name in COLUMNS
    })


def localizations_from_kde(
    kde: np.ndarray,
    frame_photons: np.ndarray,
    frame_index: int,
    camera: Camera,
    sigma_nm: float,
    threshold: float,
    upsampling: int = UPSAMPLING,
    refine: bool = False,
) -> pd.DataFrame:
    """Localizations of one frame: KDE peaks, photometry and precision on the raw frame.

    Peaks of the KDE give the emitters and their positions; linear photometry gives photons and
    background; the inverse information matrix of all emitters of the frame together (taken per
    cluster of overlapping emitters) gives each one's per-axis precision (overlaps included),
    bounded where a neighbour cannot be separated (:func:`.precision.bounded_precision`:
    ``resolved`` 0, the precision about the single-emitter CRLB combined with half the
    separation, never below the single-emitter CRLB). With ``refine`` the positions and photons
    are also fitted jointly on the raw frame (measured: helps little and costs time, see the
    benchmark). Where the fit is rejected, the KDE position is kept with the Mortensen precision
    (bounded the same way).

    Returns the package's localization columns (:data:`COLUMNS`): frame, x_nm, y_nm, score,
    photons, sigma_nm, background, bkgstd, uncertainty_x_nm, uncertainty_y_nm, uncertainty_nm,
    resolved.
    """
    return localizations_from_kdes([kde], [frame_photons], [frame_index], camera, sigma_nm,
                                   threshold, upsampling, refine)


def localizations_from_kdes(
    kdes: Sequence[np.ndarray] | np.ndarray,
    frames_photons: Sequence[np.ndarray] | np.ndarray,
    frame_indices: Sequence[int] | np.ndarray,
    camera: Camera,
    sigma_nm: float,
    threshold: float,
    upsampling: int = UPSAMPLING,
    refine: bool = False,
) -> pd.DataFrame:
    """Localizations of several frames in one table, as :func:`localizations_from_kde` gives
    them frame by frame (BLAS on one thread, see :func:`single_threaded_blas`)."""
    with single_threaded_blas():
        return _table([
            _frame_columns(kde, image, int(index), camera, sigma_nm, threshold, upsampling,
                           refine)
            for kde, image, index in zip(kdes, frames_photons, frame_indices, strict=True)
        ])
