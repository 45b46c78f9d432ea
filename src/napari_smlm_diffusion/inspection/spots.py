"""Spot detection on raw frames, isolated-spot PSF fits and aperture photometry.

Everything here works in camera counts (ADU) and camera pixels; conversion to photons and nm is
done by the caller with the photon-transfer estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from ..psf import pixel_profiles

BACKGROUND_BLOCK_PX = 8
DETECTION_SMOOTHING_PX = 1.0
MASK_Z = 4.0  # smoothed z above which pixels are treated as signal (not background)
MASK_RADIUS_PX = 5  # wide enough for the tails of bright spots of up to ~2 px sigma
SPOT_Z = 6.0  # smoothed z of a local maximum counted as a spot clearly above background
FIT_HALF_WIDTH_PX = 4
ISOLATION_PX = 2 * FIT_HALF_WIDTH_PX + 1
FIT_Z = 10.0  # spots fitted for the PSF width or the gain stand at least this far above noise
MAX_FITS = 200


@dataclass
class FrameDetection:
    """Per-frame detection results (arrays of shape (frames, rows, cols) or per spot)."""

    background: np.ndarray  # slowly varying background (block medians), ADU
    signal_mask: np.ndarray  # pixels near signal (or saturated): excluded from background stats
    spots: np.ndarray  # (n, 3) int: frame, row, col of local maxima with z > spot_z
    spot_z: np.ndarray  # (n,) smoothed, background-subtracted, noise-normalised peak heights


def _smoothing_gain() -> float:
    """Noise sd of the Gaussian-smoothed image per unit pixel noise sd."""
    impulse = np.zeros((15, 15))
    impulse[7, 7] = 1.0
    return float(np.sqrt(np.sum(ndimage.gaussian_filter(impulse, DETECTION_SMOOTHING_PX) ** 2)))


def smooth_background(frames: np.ndarray, block: int = BACKGROUND_BLOCK_PX) -> np.ndarray:
    """Slowly varying background of each frame: medians of ``block`` x ``block`` pixel blocks,
    interpolated bilinearly back to the pixel grid."""
    n, rows, cols = frames.shape
    by, bx = -(-rows // block), -(-cols // block)
    padded = np.pad(frames, ((0, 0), (0, by * block - rows), (0, bx * block - cols)),
                    mode="edge")
    medians = np.median(padded.reshape(n, by, block, bx, block), axis=(2, 4))
    # Block centres sit at (i + 1/2) block - 1/2 in pixel coordinates.
    yy = (np.arange(rows) + 0.5) / block - 0.5
    xx = (np.arange(cols) + 0.5) / block - 0.5
    coords = np.meshgrid(yy, xx, indexing="ij")
    return np.stack([ndimage.map_coordinates(m, coords, order=1, mode="nearest")
                     for m in medians])


def detect(frames: np.ndarray, saturated: np.ndarray, background: np.ndarray | None = None,
           noise_sd: np.ndarray | None = None, spot_z: float = SPOT_Z) -> FrameDetection:
    """Find signal pixels and spots in ``frames`` (float ADU, shape (frames, rows, cols)).

    ``background`` defaults to :func:`smooth_background`; ``noise_sd`` (same shape) is the
    expected per-pixel noise sd in ADU, by default a robust sd of each frame minus its
    background.
    """
    if background is None:
        background = smooth_background(frames)
    residual = frames - background
    # Spots only add counts, so the lower half of the residuals measures the noise even in
    # crowded frames: sd = median - 15.9th percentile for a normal distribution.
    low, mid = np.percentile(residual, [15.87, 50.0], axis=(1, 2), keepdims=True)
    noise = np.maximum(mid - low, 1e-6)
    scale = noise if noise_sd is None else np.maximum(noise_sd, 1e-6)
    smooth = ndimage.gaussian_filter(residual / scale, (0, DETECTION_SMOOTHING_PX,
                                                        DETECTION_SMOOTHING_PX))
    z = smooth / _smoothing_gain()
    footprint = np.zeros((1, 2 * MASK_RADIUS_PX + 1, 2 * MASK_RADIUS_PX + 1), bool)
    yy, xx = np.mgrid[-MASK_RADIUS_PX:MASK_RADIUS_PX + 1, -MASK_RADIUS_PX:MASK_RADIUS_PX + 1]
    footprint[0] = yy**2 + xx**2 <= MASK_RADIUS_PX**2
    signal = ndimage.binary_dilation((z > MASK_Z) | saturated, structure=footprint)
    peaks = (z == ndimage.maximum_filter(z, size=(1, 3, 3))) & (z > spot_z)
    spots = np.argwhere(peaks)
    return FrameDetection(background, signal, spots, z[tuple(spots.T)])


def isolated(spots: np.ndarray, shape: tuple[int, int], distance: int = ISOLATION_PX,
             border: int = FIT_HALF_WIDTH_PX) -> np.ndarray:
    """Boolean mask of spots with no other spot of the same frame within ``distance`` pixels
    (Chebyshev) and at least ``border`` pixels from the frame edge."""
    keep = np.ones(len(spots), bool)
    rows, cols = shape
    keep &= (spots[:, 1] >= border) & (spots[:, 1] < rows - border)
    keep &= (spots[:, 2] >= border) & (spots[:, 2] < cols - border)
    for frame in np.unique(spots[:, 0]):
        index = np.flatnonzero(spots[:, 0] == frame)
        if len(index) < 2:
            continue
        pos = spots[index, 1:]
        gap = np.max(np.abs(pos[:, None, :] - pos[None, :, :]), axis=2)
        np.fill_diagonal(gap, distance + 1)
        keep[index[np.min(gap, axis=1) <= distance]] = False
    return keep


def brightest_isolated(det: FrameDetection, keep: np.ndarray) -> np.ndarray:
    """The up to ``MAX_FITS`` brightest spots among ``keep`` with z > ``FIT_Z`` (n, 3)."""
    chosen = np.flatnonzero(keep & (det.spot_z > FIT_Z))
    return det.spots[chosen[np.argsort(-det.spot_z[chosen])][:MAX_FITS]]


def windows(frames: np.ndarray, spots: np.ndarray, half: int = FIT_HALF_WIDTH_PX) -> np.ndarray:
    """Square windows (n, 2 half + 1, 2 half + 1) centred on the spots (inside the frames)."""
    offsets = np.arange(-half, half + 1)
    rows = spots[:, 1, None, None] + offsets[None, :, None]
    cols = spots[:, 2, None, None] + offsets[None, None, :]
    return frames[spots[:, 0, None, None], rows, cols]


@dataclass
class SpotFit:
    """Least-squares fit of one spot window (ADU): width (px), fitted offset, the model image and
    the Jacobian of the (weighted) residuals at the solution (pixels x 5)."""

    sigma: float
    offset: float
    model: np.ndarray
    jacobian: np.ndarray


def fit_spot(window: np.ndarray, noise_sd: np.ndarray | float) -> SpotFit | None:
    """Weighted least-squares fit of an integrated Gaussian with free width to one window (ADU).

    Returns None when the fit fails or its width runs to a bound.
    """
    size = window.shape[0]
    centre = size / 2.0
    start_bg = float(np.median(np.concatenate([window[0], window[-1], window[:, 0],
                                               window[:, -1]])))
    start_amp = max(float(np.sum(window - start_bg)), 1.0)
    first = np.zeros(1, dtype=int)

    def model(p: np.ndarray) -> np.ndarray:
        x, y, amp, bg, sigma = p
        (ex,), _ = pixel_profiles(np.array([x]), first, size, sigma)
        (ey,), _ = pixel_profiles(np.array([y]), first, size, sigma)
        return amp * np.outer(ey, ex) + bg

    lower = [centre - 1.5, centre - 1.5, 0.0, -np.inf, 0.3]
    upper = [centre + 1.5, centre + 1.5, np.inf, np.inf, size / 2.0]
    start = [centre, centre, start_amp, start_bg, 1.2]
    try:
        result = least_squares(lambda p: ((model(p) - window) / noise_sd).ravel(), start,
                               bounds=(lower, upper), x_scale="jac")
    except ValueError:
        return None
    sigma = float(result.x[4])
    if not result.success or not lower[4] * 1.01 < sigma < upper[4] * 0.99:
        return None
    return SpotFit(sigma, float(result.x[3]), model(result.x), result.jac)


def aperture_sums(frames: np.ndarray, spots: np.ndarray, half: int) -> np.ndarray:
    """Sums (ADU) over (2 half + 1)^2 windows around the spots, minus the local background (the
    mean of the ring of pixels just outside the window; spots need ``half + 1`` pixels of
    margin)."""
    patches = windows(frames, spots, half + 1)
    ring = np.concatenate([patches[:, 0], patches[:, -1], patches[:, 1:-1, 0],
                           patches[:, 1:-1, -1]], axis=1)
    inner = patches[:, 1:-1, 1:-1]
    return np.sum(inner, axis=(1, 2)) - np.mean(ring, axis=1) * inner[0].size


def neighbour_correlation(frames: np.ndarray, background: np.ndarray,
                          usable: np.ndarray) -> float:
    """Correlation of horizontally adjacent background residuals (frame minus background).

    Camera noise is independent from pixel to pixel (about 0); molecules that crowd the
    "background" make it correlated over the PSF width (0.3-0.8).
    """
    residual = frames - background
    pair = usable[:, :, 1:] & usable[:, :, :-1]
    if np.count_nonzero(pair) < 3:
        return float("nan")
    left, right = residual[:, :, :-1][pair], residual[:, :, 1:][pair]
    if left.std() == 0 or right.std() == 0:
        return 0.0
    return float(np.corrcoef(left, right)[0, 1])
