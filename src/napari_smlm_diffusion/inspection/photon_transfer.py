"""Photon transfer from the background pixels of a stack: gain, baseline and read noise.

With the package's camera convention (``camera.py``) a pixel that receives ``n`` photo-electrons
reads on average ``mean = baseline + n em_gain / sensitivity`` ADU with variance

    var = F^2 (em_gain / sensitivity) (mean - baseline) + read_var,

where ``F^2`` is 2 for an EMCCD (EM gain > 1) and 1 otherwise, and ``read_var = (read_noise /
sensitivity)^2`` (+ 1/12 for integer counts). The slope ``a`` of the mean-variance line gives
``sensitivity = F^2 em_gain / a``; its intercept ``c = read_var - a baseline`` ties baseline and
read noise together. They are separated by the third cumulant of the shot noise, which the read
noise (Gaussian) does not have: ``k3 = kappa a (var - read_var)`` with ``kappa = 1`` for Poisson
counts and ``3/2`` for the EM register (a compound Poisson-exponential).

The noise of each background pixel is measured against the mean of its background neighbours in
the same frame (a 9 x 9 window without the pixel itself), so the background may vary from frame to
frame and smoothly across the field; those variations provide the range of levels of the line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..camera import Camera
from ..errors import InputError

WINDOW_PX = 9
OUTER_WINDOW_PX = 25
MIN_NEIGHBOURS = 20
MIN_PIXEL_FRAMES = 5  # frames a pixel must be background in, for its fixed pattern
N_BINS = 20
MIN_BIN_COUNT = 50
N_BOOTSTRAP = 200
#: The read noise is taken from the data when the skewness pins the baseline to this many ADU.
SKEW_BASELINE_SE_ADU = 1.5
#: ... and also when it differs from the given read noise by more than this many standard errors.
READ_AGREEMENT_SE = 3.0
#: Variance that pixels differing in read noise may add to the given read noise's, as a fraction
#: of it: a baseline that relies on the given read noise is uncertain by this variance over the
#: gain. The settings ask for the rms over pixels; an sCMOS's spec sheet also gives a median,
#: which is lower. A simulated spread of 0.5 in log (mean read variance 1.65 times the median's,
#: the median given) put the baseline 3-4 ADU low, 1.3 of these standard errors.
PIXEL_PATTERN_VARIANCE = 0.5


class PhotonTransferError(InputError):
    """The stack cannot give a photon-transfer estimate."""


class NarrowLevelsError(PhotonTransferError):
    """The background has (nearly) one level: the mean-variance line is undetermined."""


@dataclass
class PhotonTransfer:
    """Photon-transfer estimates (ADU units) with bootstrap standard errors over frames.

    ``read_var`` is the read-noise variance measured from the skewness of the background (its
    standard error ``read_var_se`` is large when the shot noise dominates); ``baseline`` uses it
    when ``read_noise_from_data``, else the given read noise.
    """

    slope: float  # ADU of variance per ADU of mean signal
    baseline: float
    read_var: float  # read-noise variance, ADU^2 (without the quantisation term)
    read_noise_from_data: bool
    slope_se: float
    baseline_se: float
    read_var_se: float
    n_pixels: int
    single_level: bool = False  # gain from the spots (the background has one level)
    #: The background's read variance differs from the given read noise's by more than
    #: ``READ_AGREEMENT_SE`` standard errors (so the data's is used).
    read_noise_disagrees: bool = False

    @classmethod
    def of_camera(cls, camera: Camera) -> PhotonTransfer:
        """The photon transfer a camera's settings imply (no measurement: zero errors)."""
        return cls(slope=camera.excess_noise**2 * camera.em_gain / camera.sensitivity,
                   baseline=camera.baseline, read_var=(camera.read_noise / camera.sensitivity)**2,
                   read_noise_from_data=False, slope_se=0.0, baseline_se=0.0, read_var_se=0.0,
                   n_pixels=0)

    def expected_sd(self, level: np.ndarray) -> np.ndarray:
        """Noise sd (ADU) expected at a mean level (ADU)."""
        var = self.slope * (np.asarray(level) - self.baseline) + max(self.read_var, 0.0)
        return np.sqrt(np.maximum(var, 1.0 / 12.0))


def _window_sums(values: np.ndarray, weight: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Sums of ``values * weight`` and of ``weight`` over square windows of each frame."""
    shape = (1, size, size)
    area = size * size
    total = ndimage.uniform_filter(values * weight, shape, mode="constant") * area
    return total, np.rint(ndimage.uniform_filter(weight, shape, mode="constant") * area)


def background_residuals(frames: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per usable background pixel: frame, binning level, local level, variance and third
    moment estimates.

    The local level ``L`` is the mean of the background pixels of the 9 x 9 window without the
    pixel; the binning level is the mean over the ring between that window and a 25 x 25 one,
    independent of the pixel and of ``L``, so that selecting a bin does not bias their moments.
    A fixed pattern (offsets that differ from pixel to pixel, as on an sCMOS, or a still
    structure in the background) is not noise: each pixel's mean residual over its other frames
    is taken out.
    """
    weight = usable.astype(np.float64)
    inner, inner_n = _window_sums(frames, weight, WINDOW_PX)
    outer, outer_n = _window_sums(frames, weight, OUTER_WINDOW_PX)
    ring, ring_n = outer - inner, outer_n - inner_n
    inner -= frames * weight
    inner_n -= weight
    keep = usable & (inner_n >= MIN_NEIGHBOURS) & (ring_n >= MIN_NEIGHBOURS)
    keep &= keep.sum(axis=0)[None] >= MIN_PIXEL_FRAMES
    k = inner_n[keep]
    level = inner[keep] / k
    e = frames[keep] - level
    frame_index, rows, cols = np.nonzero(keep)
    pixel = rows * frames.shape[2] + cols
    n = np.bincount(pixel)[pixel].astype(np.float64)
    # The pixel's mean residual over its other frames (independent of this one) is its fixed
    # pattern; taking it out adds the variance of that mean, about the pixel's own variance
    # over n - 1, which is then subtracted.
    e -= (np.bincount(pixel, e)[pixel] - e) / (n - 1)
    e2 = e * e
    own_var = np.bincount(pixel, e2)[pixel] / n * (n - 1) / n
    return (frame_index, ring[keep] / ring_n[keep], level,
            (e2 - own_var / (n - 1)) / (1.0 + 1.0 / k), e**3 / (1.0 - 1.0 / k**2))


def _bin_sums(frame_index, binning, level, var, third, n_frames) -> np.ndarray:
    """Sums per (frame, level bin): count, level, var, var^2, third, third^2."""
    edges = np.quantile(binning, np.linspace(0, 1, N_BINS + 1))
    bins = np.clip(np.searchsorted(edges, binning, side="right") - 1, 0, N_BINS - 1)
    cell = frame_index * N_BINS + bins
    sums = np.zeros((6, n_frames * N_BINS))
    for row, values in enumerate((np.ones_like(level), level, var, var * var, third,
                                  third * third)):
        sums[row] = np.bincount(cell, values, minlength=n_frames * N_BINS)
    return sums.reshape(6, n_frames, N_BINS).transpose(1, 0, 2)  # (frames, 6, bins)


def _fit(sums: np.ndarray, kappa: float) -> tuple[float, float, float, float]:
    """Slope, intercept, skewness read variance and its se from summed bin statistics."""
    n, s_level, s_var, s_var2, s_third, s_third2 = sums
    ok = n >= MIN_BIN_COUNT
    n = n[ok]
    level, var, third = s_level[ok] / n, s_var[ok] / n, s_third[ok] / n
    var_se2 = np.maximum(s_var2[ok] / n - var**2, 1e-12) / n
    third_se2 = np.maximum(s_third2[ok] / n - third**2, 1e-12) / n
    if len(n) < 2 or np.ptp(level) <= 0:
        return np.nan, np.nan, np.nan, np.inf
    w = 1.0 / var_se2
    design = np.stack([level, np.ones_like(level)], axis=1) * np.sqrt(w)[:, None]
    (slope, intercept), *_ = np.linalg.lstsq(design, var * np.sqrt(w), rcond=None)
    if slope <= 0:
        return slope, intercept, np.nan, np.inf
    read_j = var - third / (kappa * slope)
    w_read = 1.0 / (third_se2 / (kappa * slope) ** 2 + var_se2)
    read_var = float(np.sum(w_read * read_j) / np.sum(w_read))
    return float(slope), float(intercept), read_var, float(1.0 / np.sqrt(np.sum(w_read)))


def pattern_baseline_se(read_var: float, slope: float) -> float:
    """Uncertainty (ADU) of a baseline computed with the given read variance ``read_var``
    (ADU^2), from the fixed-pattern variance the given value leaves out
    (``PIXEL_PATTERN_VARIANCE``)."""
    return PIXEL_PATTERN_VARIANCE * read_var / slope


def given_read_variance(camera: Camera, slope: float, data_read_var: float | None = None
                        ) -> float:
    """The given read noise in ADU^2.

    The given read noise is in electrons; converted with the given or with the measured
    sensitivity, it is the one of the two closest to the data's own read variance
    ``data_read_var`` (from the background's skewness, however uncertain) when there is one,
    else the smaller (the larger sensitivity), which keeps the baseline close when a wrong
    preset is given: an EMCCD's 50 e- over an sCMOS's sensitivity would be 100 times its
    variance."""
    measured_sensitivity = camera.excess_noise**2 * camera.em_gain / slope
    if not np.isfinite(measured_sensitivity):
        measured_sensitivity = camera.sensitivity
    candidates = [(camera.read_noise / s) ** 2 for s in (camera.sensitivity, measured_sensitivity)]
    if data_read_var is None or not np.isfinite(data_read_var):
        return min(candidates)
    return min(candidates, key=lambda v: abs(v - data_read_var))


def photon_transfer(frames: np.ndarray, usable: np.ndarray, camera: Camera, integer: bool,
                    seed: int = 0) -> PhotonTransfer:
    """Estimate the mean-variance line of the background pixels.

    Parameters
    ----------
    frames : array (frames, rows, cols)
        Raw frames in ADU (float).
    usable : bool array, same shape
        Background pixels (no spot nearby, not saturated).
    camera : Camera
        The given settings: whether the counts come from an EM register (excess noise,
        ``kappa = 3/2``), and the read noise used when the data do not pin it down (see
        :func:`given_read_variance`).
    integer : bool
        Whether the counts are integers (adds 1/12 ADU^2 of quantisation variance).
    seed : int
        Seed of the bootstrap over frames.
    """
    kappa = 1.5 if camera.is_emccd else 1.0
    quant = 1.0 / 12.0 if integer else 0.0
    frame_index, binning, level, var, third = background_residuals(frames, usable)
    if level.size < N_BINS * MIN_BIN_COUNT:
        raise PhotonTransferError(
            f"only {level.size} background pixel values free of spots and saturation were found "
            f"(need {N_BINS * MIN_BIN_COUNT}): the frames have no background to measure the "
            "camera noise; expected a blinking SMLM stack with dark gaps between the molecules")
    sums = _bin_sums(frame_index, binning, level, var, third, frames.shape[0])
    if np.mean(var) < 1e-6:  # rounding residue of the window sums
        raise PhotonTransferError(
            "the background pixels have no noise at all: expected raw camera counts (ADU), not "
            "processed or synthetic noise-free images")
    slope, intercept, read_skew, read_se = _fit(sums.sum(axis=0), kappa)
    if not np.isfinite(slope) or slope <= 0:
        raise NarrowLevelsError(
            "the noise of the background does not grow with its level (is the background "
            "the same everywhere, or the data not raw camera counts?): photon transfer needs "
            "background levels that vary across the field or over time; give the camera values "
            "instead")
    given_read_var = given_read_variance(camera, slope, read_skew - quant) + quant
    # Read noise that differs from pixel to pixel (every sCMOS) adds variance the given (median)
    # read noise does not have: with it the baseline would come out too low by that variance
    # over the gain.
    disagrees = abs(read_skew - given_read_var) > READ_AGREEMENT_SE * read_se
    from_data = read_se / slope <= SKEW_BASELINE_SE_ADU or disagrees

    def estimate(total: np.ndarray) -> tuple[float, float, float]:
        slope, intercept, read_skew, _ = _fit(total, kappa)
        read_var = read_skew if from_data else given_read_var
        return slope, (max(read_var, quant) - intercept) / slope, read_skew - quant

    best = estimate(sums.sum(axis=0))
    rng = np.random.default_rng(seed)
    n_frames = frames.shape[0]
    draws = rng.multinomial(n_frames, np.full(n_frames, 1.0 / n_frames), size=N_BOOTSTRAP)
    se = np.nanstd(np.array([estimate(np.tensordot(d, sums, axes=1)) for d in draws]), axis=0)
    if not se[0] < 0.25 * best[0]:
        raise NarrowLevelsError(
            "the background has nearly the same level in all sampled frames and pixels (noise "
            f"slope uncertain by {100 * se[0] / best[0]:.0f} %): photon transfer needs background "
            "levels that vary across the field or over time; use more frames or give the camera "
            "values instead")
    baseline_se = float(se[1]) if from_data else float(
        np.hypot(se[1], pattern_baseline_se(given_read_var, best[0])))
    return PhotonTransfer(
        slope=best[0], baseline=best[1], read_var=best[2], read_noise_from_data=from_data,
        slope_se=float(se[0]), baseline_se=baseline_se, read_var_se=float(se[2]),
        n_pixels=int(level.size), read_noise_disagrees=bool(disagrees))
