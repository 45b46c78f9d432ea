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
from scipy.spatial import cKDTree

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
PAIR_CHUNK = 4096  # overlapping pairs per product (a few MB each)
#: Which row profile (0: the PSF's, 1: its derivative) and column profile (0: the derivative,
#: 1: the PSF's) each column of an emitter uses: d/dx, d/dy, d/dN.
ROW_PROFILE = np.array([0, 1, 0])
COLUMN_PROFILE = np.array([0, 1, 1])


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
    """Jacobian of the expected image of n emitters plus a flat background with respect to
    (x_i, y_i, N_i) for each i and then the background, kept as dense patches: emitter i's
    columns are nonzero only on its window of +-(3 sigma + 1) pixels around it (pixels outside
    the frame are zero). Built once per set of positions and shared by the photometry (unit-PSF
    columns) and the information matrix at those positions (the x, y columns scale with the
    photons). Its products (expected image, projection of an image, weighted Gram matrix) take
    each emitter's patch against those of the emitters whose windows overlap it: the sums a
    sparse matrix product would form, without the sparse bookkeeping."""

    def __init__(self, x: np.ndarray, y: np.ndarray, sigma: float, shape: tuple[int, int]):
        rows, cols = shape
        half = int(np.ceil(3.0 * sigma)) + 1
        self.width = width = 2 * half + 1
        self.c0 = np.floor(x).astype(np.int64) - half
        self.r0 = np.floor(y).astype(np.int64) - half
        ex, dex = pixel_profiles(x, self.c0, width, sigma)
        ey, dey = pixel_profiles(y, self.r0, width, sigma)
        cs = self.c0[:, None] + np.arange(width)[None, :]
        rs = self.r0[:, None] + np.arange(width)[None, :]
        inside_r, inside_c = (rs >= 0) & (rs < rows), (cs >= 0) & (cs < cols)
        # flat pixel index of each window pixel (0 outside the frame, where the columns are 0)
        self.pixels = np.where(inside_r[:, :, None] & inside_c[:, None, :],
                               rs[:, :, None] * cols + cs[:, None, :], 0).reshape(
            len(x), width * width)
        # the columns d/dx and d/dy per photon and the unit-photon PSF are separable: a row
        # profile (ey or dey) times a column profile (dex or ex), zero outside the frame; the
        # two profiles of each axis are kept, (n, 2, w), and ROW_PROFILE / COLUMN_PROFILE say
        # which one each column uses
        self.row_profiles = np.stack([ey, dey], axis=1) * inside_r[:, None]
        self.col_profiles = np.stack([dex, ex], axis=1) * inside_c[:, None]
        self.unit_columns = (self.row_profiles[:, ROW_PROFILE, :, None]
                             * self.col_profiles[:, COLUMN_PROFILE, None, :]).reshape(
            len(x), 3, width * width)
        self.pixel_count = rows * cols
        self._overlap_pairs: tuple[np.ndarray, np.ndarray] | None = None

    def _scales(self, photons: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Columns to use (all three, or the unit PSF alone when ``photons`` is None) and their
        scale per emitter, (n, k)."""
        if photons is None:
            return self.unit_columns[:, 2:], np.ones((len(self.pixels), 1))
        photons = np.asarray(photons, dtype=np.float64)
        return self.unit_columns, np.stack([photons, photons, np.ones_like(photons)], axis=1)

    def expected(self, photons: np.ndarray, background: float) -> np.ndarray:
        """Expected image (flattened) of emitters of ``photons`` on a flat ``background``."""
        values = np.asarray(photons, dtype=np.float64)[:, None] * self.unit_columns[:, 2]
        return np.bincount(self.pixels.ravel(), weights=values.ravel(),
                           minlength=self.pixel_count) + background

    def unit_matrix(self) -> csc_matrix:
        """The unit-PSF columns and the background column as a sparse matrix
        (pixels x (n + 1)), for iterative solvers on frames with many emitters."""
        n, window = self.pixels.shape
        values = np.concatenate([self.unit_columns[:, 2].ravel(), np.ones(self.pixel_count)])
        rows = np.concatenate([self.pixels.ravel(), np.arange(self.pixel_count)])
        starts = np.r_[np.arange(n + 1) * window, n * window + self.pixel_count]
        return csc_matrix((values, rows, starts), shape=(self.pixel_count, n + 1))

    def project(self, image: np.ndarray, photons: np.ndarray | None = None) -> np.ndarray:
        """Transposed Jacobian times a flattened ``image``, shape (k n + 1,): the columns
        x_i, y_i, N_i of emitters of ``photons`` (k = 3), or the unit-PSF columns alone
        (k = 1, ``photons`` None), then the background."""
        columns, scales = self._scales(photons)
        sums = np.einsum("nkp,np->nk", columns, image[self.pixels]) * scales
        return np.r_[sums.ravel(), image.sum()]

    def gram(self, weights: np.ndarray | None = None, photons: np.ndarray | None = None
             ) -> np.ndarray:
        """Dense ``J^T diag(weights) J`` for the columns of :meth:`project` (``photons`` as
        there), ``weights`` per pixel of the flattened frame (1 when omitted); shape
        (k n + 1,) * 2."""
        columns, scales = self._scales(photons)
        n, k = scales.shape
        total = k * n + 1
        first, second = self._pairs()
        parts = np.arange(3 - k, 3)  # the unit PSF alone, or all three columns
        pixel_weights = np.ones(self.pixel_count) if weights is None else np.asarray(weights)
        window_weights = pixel_weights[self.pixels]  # (n, w * w), each emitter's window
        # pairs in chunks, so that memory stays bounded on frames crowded with detections
        blocks = np.concatenate([
            self._pair_blocks(first[chunk], second[chunk],
                              None if weights is None else window_weights, parts)
            for chunk in _chunks(len(first), PAIR_CHUNK)]) if len(first) else np.zeros((0, k, k))
        blocks *= scales[first][:, :, None] * scales[second][:, None, :]
        rows = np.broadcast_to(k * first[:, None, None] + np.arange(k)[None, :, None],
                               blocks.shape)
        cols = np.broadcast_to(k * second[:, None, None] + np.arange(k)[None, None, :],
                               blocks.shape)
        border = ((columns * window_weights[:, None]).sum(axis=2) * scales).ravel()
        gram = np.zeros((total, total))
        gram[cols, rows] = blocks
        gram[rows, cols] = blocks
        gram[:-1, -1] = gram[-1, :-1] = border
        gram[-1, -1] = pixel_weights.sum()
        return gram

    def _pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Emitter pairs (first, second) whose windows overlap, each emitter with itself
        included (computed once)."""
        if self._overlap_pairs is None:
            pairs = _overlapping_windows(self.r0, self.c0, self.width)
            self._overlap_pairs = pairs[:, 0], pairs[:, 1]
        return self._overlap_pairs

    def _pair_blocks(self, first: np.ndarray, second: np.ndarray,
                     window_weights: np.ndarray | None, parts: np.ndarray) -> np.ndarray:
        """Unscaled Gram blocks (pairs, k, k) of the unit columns ``parts`` of each pair: the
        sum over the first's window of weights (``window_weights``, (n, w * w) per emitter, or
        None for 1) times the first's column times the second's.
        Both columns are separable, so the window sum runs over rows of the weights times
        the product of the two column profiles (4 w^2 per pair instead of 9 w^2), and without
        weights it is a product of two 1D sums."""
        w = self.width
        shifted_rows, shifted_cols = self._shifted_profiles(first, second)
        row_products = self.row_profiles[first][:, :, None, :] * shifted_rows[:, None, :, :]
        col_products = self.col_profiles[first][:, :, None, :] * shifted_cols[:, None, :, :]
        row_of, col_of = ROW_PROFILE[parts], COLUMN_PROFILE[parts]
        if window_weights is None:
            row_sums, col_sums = row_products.sum(axis=3), col_products.sum(axis=3)
            return (row_sums[:, row_of[:, None], row_of[None, :]]
                    * col_sums[:, col_of[:, None], col_of[None, :]])
        # the first emitter's window of weights for each pair (a plain take is about twice as
        # fast as indexing the weights with every pair's pixels), then weighted column sums per
        # row of the window, (pairs, w, 4), then the sum over rows
        pair_weights = np.take(window_weights, first, axis=0).reshape(-1, w, w)
        per_row = pair_weights @ col_products.reshape(-1, 4, w).transpose(0, 2, 1)
        sums = (row_products.reshape(-1, 4, w) @ per_row).reshape(-1, 2, 2, 2, 2)
        return sums[:, row_of[:, None], row_of[None, :], col_of[:, None], col_of[None, :]]

    def _shifted_profiles(self, first: np.ndarray, second: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """The second emitters' row and column profiles on the first ones' windows, each
        (pairs, 2, w): pixel a of the first's window is pixel a - d of the second's (d the
        difference of their window origins), zero outside it."""
        w = self.width
        shifted = []
        for profiles, origin in ((self.row_profiles, self.r0), (self.col_profiles, self.c0)):
            local = np.arange(w)[None, :] - (origin[second] - origin[first])[:, None]
            inside = (local >= 0) & (local < w)
            flat = (2 * w * second[:, None, None] + w * np.arange(2)[None, :, None]
                    + np.clip(local, 0, w - 1)[:, None, :])
            shifted.append(profiles.ravel()[flat] * inside[:, None])
        return shifted[0], shifted[1]


def _chunks(total: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` covering ``range(total)``."""
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def _overlapping_windows(r0: np.ndarray, c0: np.ndarray, width: int) -> np.ndarray:
    """Index pairs (i, j), i <= j, of emitters whose square windows of ``width`` pixels at
    origins (r0, c0) overlap; each emitter with itself included. Shape (pairs, 2)."""
    origins = np.column_stack([r0, c0])
    others = cKDTree(origins).query_pairs(width - 1, p=np.inf, output_type="ndarray")
    itself = np.repeat(np.arange(len(r0))[:, None], 2, axis=1)
    return np.concatenate([itself, others.reshape(-1, 2)]).astype(np.int64)


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
        positions, photons_now = (params[0:3 * n:3], params[1:3 * n:3]), params[2:3 * n:3]
        if iteration == 0 and start_jacobian is not None:
            jacobian = start_jacobian
        else:
            jacobian = PsfJacobian(*positions, sigma, image.shape)
        model = jacobian.expected(photons_now, params[-1])
        weights = 1.0 / (noise_gain * np.maximum(model, 1e-3) + read_var)
        information = jacobian.gram(weights, photons_now)
        if iteration == iterations:
            break
        gradient = jacobian.project(weights * (data - model), photons_now)
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
