"""Joint fit of all emitters of a frame, started from the CNN's detections.

The CNN finds emitters, including overlapping ones; this step then fits positions and photons of
all of them together, with a flat background, to the raw frame by iteratively reweighted Gauss-
Newton (weights from the Poisson-normal variance of the camera model, so the fit approaches the
maximum-likelihood estimate of eq. 7). The inverse of the final information matrix gives each
localization's precision (the CRLB of the joint model, overlaps included), taken cluster by cluster
of overlapping emitters (:mod:`.precision`); each emitter's own block gives its single-emitter
CRLB. Frames with many emitters are fitted tile by tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, solve
from scipy.sparse import csc_matrix

from .precision import CLUSTER_RADIUS_SIGMAS, clusters, inverse_diagonal, single_emitter_variances
from .psf import pixel_profiles
from .tiling import tiles

ITERATIONS = 4
MAX_STEP_PX = 0.5
MAX_SHIFT_PX = 1.0
TILE_PX = 64
TILE_MARGIN_PX = 6
MAX_EMITTERS_PER_SOLVE = 400
MAX_DENSITY_PER_PX = 0.15  # 15 emitters per um^2 at 100 nm pixels


@dataclass
class JointFit:
    """Fitted parameters (pixel and photon units) and their standard errors."""

    x: np.ndarray
    y: np.ndarray
    photons: np.ndarray
    background: float
    std_x: np.ndarray
    std_y: np.ndarray
    fitted: np.ndarray  # False where the fit was rejected and the start values kept
    single_x: np.ndarray  # single-emitter CRLB (neighbours ignored), pixels
    single_y: np.ndarray


class PsfJacobian:
    """The part of :func:`psf_jacobian` that depends only on the positions, so that Jacobians
    for several photon counts at the same positions (photometry, then the precision) share it.
    Calling it with photon counts gives exactly :func:`psf_jacobian`'s matrix."""

    def __init__(self, x: np.ndarray, y: np.ndarray, sigma: float, shape: tuple[int, int]):
        rows, cols = shape
        n = len(x)
        half = int(np.ceil(3.0 * sigma)) + 1
        width = 2 * half + 1
        c0 = np.floor(x).astype(np.int64) - half
        r0 = np.floor(y).astype(np.int64) - half
        self.ex, self.dex = pixel_profiles(x, c0, width, sigma)
        self.ey, self.dey = pixel_profiles(y, r0, width, sigma)
        cs = c0[:, None] + np.arange(width)[None, :]
        rs = r0[:, None] + np.arange(width)[None, :]
        valid = ((rs >= 0) & (rs < rows))[:, :, None] & ((cs >= 0) & (cs < cols))[:, None, :]
        grid = np.broadcast_to(rs[:, :, None] * cols + cs[:, None, :], valid.shape)
        self.frame_valid = valid
        self.pixels = grid[valid]  # emitter by emitter, ascending
        self.counts = valid.sum(axis=(1, 2))
        # compressed columns: x_i, y_i, N_i over emitter i's pixels in the frame, then the
        # background over all pixels
        self.valid = np.broadcast_to(valid[:, None], (n, 3, width, width))
        self.indices = np.concatenate([np.broadcast_to(grid[:, None], self.valid.shape)[
            self.valid], np.arange(rows * cols)])
        counts = np.repeat(self.counts, 3)
        self.indptr = np.concatenate([[0], np.cumsum(counts), [counts.sum() + rows * cols]])
        self.shape = (rows * cols, 3 * n + 1)

    def unit_psfs(self) -> csc_matrix:
        """Columns 3 i + 2 (unit-photon PSFs) and 3 n (background) of the Jacobian, exactly as
        sliced from it (pixels x (n + 1))."""
        pixels = self.shape[0]
        values = np.concatenate([(self.ey[:, :, None] * self.ex[:, None, :])[self.frame_valid],
                                 np.ones(pixels)])
        indices = np.concatenate([self.pixels, np.arange(pixels)])
        indptr = np.concatenate([[0], np.cumsum(self.counts), [self.counts.sum() + pixels]])
        return csc_matrix((values, indices, indptr), shape=(pixels, len(self.counts) + 1))

    def __call__(self, photons: np.ndarray) -> csc_matrix:
        """Jacobian (pixels x (3n + 1)) for emitters of ``photons`` at these positions."""
        ex, dex, ey, dey = self.ex, self.dex, self.ey, self.dey
        blocks = np.stack([
            photons[:, None, None] * ey[:, :, None] * dex[:, None, :],
            photons[:, None, None] * dey[:, :, None] * ex[:, None, :],
            ey[:, :, None] * ex[:, None, :],
        ], axis=1)
        values = np.concatenate([blocks[self.valid], np.ones(self.shape[0])])
        return csc_matrix((values, self.indices, self.indptr), shape=self.shape)


def psf_jacobian(x: np.ndarray, y: np.ndarray, photons: np.ndarray, sigma: float,
                 shape: tuple[int, int]) -> csc_matrix:
    """Sparse Jacobian (pixels x (3n + 1)) of the expected image of n emitters plus a flat
    background, with respect to (x_i, y_i, N_i) for each i and then the background. Column
    3 i + 2 is emitter i's unit-photon PSF (support +-(3 sigma + 1) pixels)."""
    return PsfJacobian(x, y, sigma, shape)(photons)


def _fit_block(image, x, y, photons, background, sigma, noise_gain, read_var,
               iterations, start_jacobian: PsfJacobian | None = None) -> JointFit:
    n = len(x)
    x0, y0 = x.copy(), y.copy()
    data = image.ravel().astype(np.float64)
    params = np.empty(3 * n + 1)
    params[0:3 * n:3], params[1:3 * n:3], params[2:3 * n:3] = x, y, np.maximum(photons, 1.0)
    params[-1] = background
    information = None
    for iteration in range(iterations + 1):
        if iteration == 0 and start_jacobian is not None:
            jac = start_jacobian(params[2:3 * n:3])
        else:
            jac = psf_jacobian(params[0:3 * n:3], params[1:3 * n:3], params[2:3 * n:3], sigma,
                               image.shape)
        photons_only = np.zeros_like(params)
        photons_only[2:3 * n:3] = params[2:3 * n:3]
        model = jac @ photons_only + params[-1]  # the zero terms leave the sums exact
        weights = 1.0 / (noise_gain * np.maximum(model, 1e-3) + read_var)
        weighted = csc_matrix((jac.data * weights[jac.indices], jac.indices, jac.indptr),
                              shape=jac.shape)
        information = (jac.T @ weighted).toarray()
        if iteration == iterations:
            break
        gradient = weighted.T @ (data - model)
        damped = information + np.diag(1e-3 * np.diag(information) + 1e-9)
        try:
            step = solve(damped, gradient, assume_a="pos")
        except LinAlgError:
            break
        step[0:3 * n:3] = np.clip(step[0:3 * n:3], -MAX_STEP_PX, MAX_STEP_PX)
        step[1:3 * n:3] = np.clip(step[1:3 * n:3], -MAX_STEP_PX, MAX_STEP_PX)
        params += step
        params[2:3 * n:3] = np.maximum(params[2:3 * n:3], 1.0)
    fx, fy = params[0:3 * n:3], params[1:3 * n:3]
    labels = clusters(fx, fy, CLUSTER_RADIUS_SIGMAS * sigma) if np.isfinite(
        params).all() else np.zeros(n, dtype=np.int64)
    variances = inverse_diagonal(information, labels)
    single = np.sqrt(np.abs(single_emitter_variances(information)))
    good = (np.hypot(fx - x0, fy - y0) <= MAX_SHIFT_PX) & np.isfinite(fx) & np.isfinite(fy)
    good &= np.isfinite(variances[0:3 * n:3]) & (variances[0:3 * n:3] > 0)
    return JointFit(
        x=np.where(good, fx, x0), y=np.where(good, fy, y0),
        photons=np.where(good, params[2:3 * n:3], photons), background=float(params[-1]),
        std_x=np.sqrt(np.abs(variances[0:3 * n:3])), std_y=np.sqrt(np.abs(variances[1:3 * n:3])),
        fitted=good, single_x=single[0::3], single_y=single[1::3],
    )


def joint_fit(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, photons: np.ndarray, background: float,
    sigma: float, noise_gain: float = 1.0, read_var: float = 0.0,
    iterations: int = ITERATIONS, start_jacobian: PsfJacobian | None = None,
) -> JointFit:
    """Fit positions and photons of all emitters of a frame (pixel units, frame in photons).

    Parameters
    ----------
    image : array (rows, cols)
        The frame in photons.
    x, y, photons : arrays (n,)
        Start values (pixels, photons), e.g. from the CNN and linear photometry.
    background : float
        Start value of the background (photons per pixel).
    sigma : float
        PSF standard deviation in pixels (fixed).
    noise_gain, read_var : float
        Pixel variance model: ``noise_gain * expected + read_var`` (photon units).
    iterations : int
        Gauss-Newton steps; 0 keeps the start values and only computes their standard errors
        (the CRLB of the joint model at those values).
    start_jacobian : PsfJacobian, optional
        Built for the start positions ``x``, ``y`` (and ``sigma``, ``image.shape``), e.g. by the
        photometry, to be reused; frames fitted tile by tile build their own.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    photons = np.asarray(photons, dtype=np.float64)
    n = len(x)
    if n == 0:
        empty = np.zeros(0)
        return JointFit(empty, empty, empty, float(background), empty, empty, empty.astype(bool),
                        empty, empty)
    rows, cols = image.shape
    if n > MAX_DENSITY_PER_PX * rows * cols:  # not a plausible SMLM frame: keep the start values
        nan = np.full(n, np.nan)
        return JointFit(x, y, photons, float(background), nan, nan, np.zeros(n, dtype=bool),
                        nan, nan)
    if n <= MAX_EMITTERS_PER_SOLVE:
        return _fit_block(image, x, y, photons, background, sigma, noise_gain, read_var,
                          iterations, start_jacobian)
    result = JointFit(x.copy(), y.copy(), photons.copy(), float(background),
                      np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=bool),
                      np.full(n, np.nan), np.full(n, np.nan))
    # tiles small enough that each holds about MAX_EMITTERS_PER_SOLVE / 2 emitters on average
    core = int(np.sqrt(0.25 * MAX_EMITTERS_PER_SOLVE * rows * cols / n))
    tile = int(np.clip(core + 2 * TILE_MARGIN_PX, 2 * TILE_MARGIN_PX + 4, TILE_PX))
    for r0, r1, kr0, kr1 in tiles(rows, tile, TILE_MARGIN_PX):
        for c0, c1, kc0, kc1 in tiles(cols, tile, TILE_MARGIN_PX):
            inside = (x >= c0) & (x < c1) & (y >= r0) & (y < r1)
            if not inside.any():
                continue
            part = _fit_block(image[r0:r1, c0:c1], x[inside] - c0, y[inside] - r0,
                              photons[inside], background, sigma, noise_gain, read_var,
                              iterations)
            keep = (x[inside] >= kc0) & (x[inside] < kc1) & (y[inside] >= kr0) & (
                y[inside] < kr1)
            index = np.flatnonzero(inside)[keep]
            result.x[index], result.y[index] = part.x[keep] + c0, part.y[keep] + r0
            result.photons[index] = part.photons[keep]
            result.std_x[index], result.std_y[index] = part.std_x[keep], part.std_y[keep]
            result.fitted[index] = part.fitted[keep]
            result.single_x[index], result.single_y[index] = part.single_x[keep], part.single_y[
                keep]
    return result
