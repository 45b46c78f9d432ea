"""Camera gain from the residuals of isolated spots, for backgrounds with a single level.

When every background pixel has the same mean, the mean-variance line of the background is
undetermined; the spots supply the missing levels. For a least-squares fit with projection
``H`` the residuals ``r = (I - H) x`` have ``E[r_i^2] = sum_j (I - H)_ij^2 V_j`` with the pixel
variances ``V_j = v_bg + a (mu_j - offset)``, linear in the slope ``a``. Spots whose residuals
do not fit the Poisson-Gaussian model (two molecules seen as one) are left out by a chi-square
test. The baseline then follows from the background level: ``(level - baseline) a = v_bg -
read_var``; it inherits the relative error of ``a`` times the background in ADU, so it is much
less precise than with varying levels.

With an EM gain the spots' slope is biased (by +7 % on the simulated flat-background stacks:
the EM register's noise is far from Gaussian at spot levels), while the third cumulant of the
background, ``k3 = 3/2 a (v_bg - read_var)`` for the EM register's compound Poisson-exponential
noise, pins ``a`` without bias to a few per cent; the two are combined by their standard errors.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2

from ..camera import Camera
from .photon_transfer import (
    N_BOOTSTRAP,
    NarrowLevelsError,
    PhotonTransfer,
    PhotonTransferError,
    background_residuals,
    given_read_variance,
    pattern_baseline_se,
    photon_transfer,
)
from .spots import (
    FrameDetection,
    brightest_isolated,
    fit_spot,
    isolated,
    neighbour_correlation,
    windows,
)

MIN_SPOTS = 30
#: Relative error of the slope beyond its bootstrap error (near-overlapping molecules that pass
#: the chi-square test): the slope was within 10 % of the truth on most simulated test stacks.
SLOPE_SYSTEMATIC = 0.1
OUTLIER_P = 1e-3
#: Fewer spots passing the chi-square test mean overlapping molecules bias the gain (uniform
#: test stacks pass 68-85 %; molecules along filaments 40 %).
MIN_SINGLE_FRACTION = 0.6
#: With an EM gain and no usable spots, the skewness alone must pin the gain to this fraction.
MAX_SKEW_ONLY_SE = 0.25
SPARSE_CORRELATION = 0.1  # above: a note that the background is partly crowded
CROWDED_CORRELATION = 0.5  # above: no usable background


def _spot_terms(frames: np.ndarray, spots: np.ndarray) -> np.ndarray:
    """Per fitted spot: sum of squared residuals, its noise-floor and its signal coefficients."""
    rows = []
    for window in windows(frames, spots):
        fit = fit_spot(window, 1.0)
        if fit is None:
            continue
        q, _ = np.linalg.qr(fit.jacobian)
        keep2 = (np.eye(len(q)) - q @ q.T) ** 2
        rows.append((np.sum((fit.model - window) ** 2), keep2.sum(),
                     np.sum(keep2 @ (fit.model.ravel() - fit.offset)), window.size - 5))
    return np.array(rows).reshape(-1, 4)


def _slope(terms: np.ndarray, v_bg: float) -> tuple[float, np.ndarray]:
    """Slope from the spots that pass the chi-square test (starting from the median)."""
    r2, floor, signal, dof = terms.T
    slope = float(np.median((r2 - v_bg * floor) / signal))
    ok = np.ones(len(terms), bool)
    for _ in range(3):
        expected = v_bg * floor + max(slope, 1e-12) * signal
        ok = chi2.sf(r2 / expected * dof, dof) > OUTLIER_P
        slope = float(np.sum(r2[ok] - v_bg * floor[ok]) / np.sum(signal[ok]))
    return slope, ok


def _spot_slope(frames: np.ndarray, det: FrameDetection, v_bg: float, seed: int
                ) -> tuple[float, float]:
    """Slope (ADU of variance per ADU of signal) and its standard error from the residuals of
    the isolated bright spots; PhotonTransferError when they cannot give it."""
    terms = _spot_terms(frames, brightest_isolated(det, isolated(det.spots, frames.shape[1:])))
    if len(terms) < MIN_SPOTS:
        raise PhotonTransferError(
            f"the background has a single level and only {len(terms)} isolated bright spots "
            f"were found (need {MIN_SPOTS}) to measure the camera gain from their noise: use "
            "more frames or give the camera values instead")
    slope, ok = _slope(terms, v_bg)
    if ok.mean() < MIN_SINGLE_FRACTION:
        raise PhotonTransferError(
            f"the background has a single level and only {100 * ok.mean():.0f} % of the "
            f"isolated spots look like single molecules (need {100 * MIN_SINGLE_FRACTION:.0f} "
            "%; molecules crowd along structures) to measure the camera gain from their noise: "
            "give the camera values instead")
    good = terms[ok]
    picks = np.random.default_rng(seed).integers(0, len(good), (N_BOOTSTRAP, len(good)))
    boot = np.array([np.sum(good[p, 0] - v_bg * good[p, 1]) / np.sum(good[p, 2])
                     for p in picks])
    if not (0 < slope and np.std(boot) < 0.5 * slope):
        raise PhotonTransferError(
            "the background has a single level and the noise of the spots does not pin down "
            "the camera gain: give the camera values instead")
    return slope, float(np.hypot(np.std(boot), SLOPE_SYSTEMATIC * slope))


def single_level_transfer(frames: np.ndarray, usable: np.ndarray, det: FrameDetection,
                          camera: Camera, integer: bool, seed: int = 0
                          ) -> tuple[PhotonTransfer, str]:
    """Photon transfer from the background level and the residuals of isolated spots (with an
    EM gain also the skewness of the background, alone when the spots cannot be used); returns
    the estimates and a note on how they were made."""
    _, _, level, var, third = background_residuals(frames, usable)
    m_bg, v_bg = float(level.mean()), float(var.mean())
    third_mean, third_se = float(third.mean()), float(third.std() / np.sqrt(third.size))
    quant = 1.0 / 12.0 if integer else 0.0
    sources = "the noise of isolated spots (assuming a Gaussian PSF)"
    spots_used = True
    try:
        slope, slope_se = _spot_slope(frames, det, v_bg, seed)
    except PhotonTransferError:
        if not camera.is_emccd:
            raise
        spots_used, slope, slope_se = False, float("nan"), float("inf")
        sources = ("the skewness of the background (EM register) alone, the isolated spots "
                   "being too few or too often overlapping molecules")
    else:
        if camera.is_emccd:
            sources += " and the skewness of the background (EM register)"
    read_var = given_read_variance(camera, slope) + quant
    if camera.is_emccd:
        slope, slope_se = _combined_with_skewness(slope, slope_se, v_bg - read_var,
                                                  third_mean, third_se)
        if not spots_used and not slope_se < MAX_SKEW_ONLY_SE * slope:
            raise PhotonTransferError(
                "the background has a single level, and neither the noise of the spots nor the "
                "skewness of the background pins down the camera gain: give the camera values "
                "instead")
        # The skewness went into the slope: the read noise is the given one.
        read_var_estimate, read_var_se = read_var - quant, float("inf")
    else:  # read noise from the skewness of the background (Poisson: k3 = a (v - read_var))
        read_var_estimate = v_bg - third_mean / slope - quant
        read_var_se = float(np.hypot(third_se / slope, third_mean / slope * SLOPE_SYSTEMATIC))
    return PhotonTransfer(
        slope=slope, baseline=m_bg - (v_bg - read_var) / slope, read_var=read_var_estimate,
        read_noise_from_data=False, slope_se=slope_se,
        baseline_se=float(np.hypot((v_bg - read_var) / slope**2 * slope_se,
                                   pattern_baseline_se(read_var, slope))),
        read_var_se=read_var_se,
        n_pixels=int(level.size), single_level=True), (
        f"the background has a single level: the camera gain was measured from {sources} and "
        "the baseline from the background level with the given read noise; both are less "
        "precise")


def _combined_with_skewness(slope: float, slope_se: float, shot_var: float, third: float,
                            third_se: float) -> tuple[float, float]:
    """The spots' slope combined, by inverse variance, with the EM register's slope from the
    background's third cumulant ``third = 3/2 slope shot_var`` (``shot_var``: the background
    variance without the read noise); returns (slope, standard error)."""
    skew_slope = third / (1.5 * shot_var)
    skew_se = third_se / (1.5 * shot_var)
    if not (skew_slope > 0 and np.isfinite(skew_se) and skew_se > 0):
        return slope, slope_se
    if not np.isfinite(slope_se):
        return float(skew_slope), float(skew_se)
    weights = np.array([slope_se, skew_se]) ** -2.0
    combined = float(weights @ [slope, skew_slope] / weights.sum())
    return combined, float(weights.sum() ** -0.5)


def measure_camera(frames: np.ndarray, det: FrameDetection, camera: Camera, integer: bool,
                   seed: int = 0) -> tuple[PhotonTransfer, list[str]]:
    """Photon transfer of the background, or from the spots when the background has a single
    level; returns the estimates and notes on how they were made.

    Frames crowded with molecules (background residuals correlated between neighbouring
    pixels, which camera noise never is) are refused.
    """
    usable = ~det.signal_mask
    correlation = neighbour_correlation(frames, det.background, usable)
    if correlation > CROWDED_CORRELATION:
        raise PhotonTransferError(
            f"the frames have no background free of molecules (neighbouring background pixels "
            f"correlate by {correlation:.2f}; camera noise alone gives about 0): expected a "
            "sparse blinking stack with dark gaps between the molecules")
    notes = []
    if correlation > SPARSE_CORRELATION:
        notes.append(f"the background is partly crowded with molecules (neighbouring pixels "
                     f"correlate by {correlation:.2f}): the camera estimates may be biased")
    try:
        return photon_transfer(frames, usable, camera, integer, seed), notes
    except NarrowLevelsError:
        pt, how = single_level_transfer(frames, usable, det, camera, integer, seed)
    return pt, notes + [how]
