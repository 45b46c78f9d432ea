"""Detection thresholds of the KDE CNN as a function of the PSF width in camera pixels.

The CNN's KDE peaks are lower where the light of a molecule spreads over more pixels (a PSF of
1.9-2.5 camera pixels behind 50-65 nm pixels) and where it is dim: one threshold for every setup
misses most molecules there (the first release's 0.35 found 19-28 % of the molecules of a dim
65 nm-pixel stack, 60-68 % at 0.05-0.1). :func:`fit_detection_thresholds` picks, for each PSF width
of a grid, the threshold with the best mean Jaccard index at 100 nm tolerance over simulated
validation sets at that width (sCMOS and EMCCD; dim, bright, and very bright on a high background
as in DNA-PAINT; 0.3-3 per um^2; blinking): a
molecule counts as found only within 100 nm, so missed molecules, false detections and poorly
placed ones all cost. (The mean efficiency, which weighs the RMSE of every match, moved the
thresholds by one step at most from the single 0.35 and gained 1-2 points; the Jaccard index at
250 nm alone always picks the lowest threshold.)
:func:`threshold_for_psf` interpolates the table (linear in log PSF width, constant beyond its
ends). The table is stored in the KDE CNN's card as ``thresholds_by_psf``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..camera import Camera, preset
from ..simulate import SimulationConfig

PSF_GRID_PX = (0.7, 1.0, 1.3, 1.6, 1.9, 2.2, 2.5)
CANDIDATES = tuple(np.round(np.arange(0.05, 0.755, 0.05), 2))
DENSITIES = (0.3, 1.0, 3.0)
MATCH_NM = 100.0
THRESHOLD_SEED = 820_000  # validation seeds: not used in training or in the benchmarks
CAMERAS = {name: preset(name, pixel_size=100.0) for name in ("sCMOS", "EMCCD")}
PHOTONS = {"dim": (200.0, 800.0), "bright": (1000.0, 10000.0),
           "DNA-PAINT-like": (5000.0, 30000.0)}
BACKGROUND = {"dim": (5.0, 30.0), "bright": (20.0, 200.0), "DNA-PAINT-like": (100.0, 500.0)}


def threshold_conditions(psf_sigma_px: float, size: int = 48) -> dict[str, SimulationConfig]:
    """Validation sets at one PSF width: both cameras, dim, bright and very bright on a high
    background, every density."""
    from ..training_data import REALISTIC_BLINKING

    return {f"{camera}/{level}/d{density:g}": SimulationConfig(
                size=(size, size), density=density, photons=PHOTONS[level],
                background=BACKGROUND[level], psf_sigma_px=psf_sigma_px, camera=CAMERAS[camera],
                layout="filaments", blinking=REALISTIC_BLINKING)
            for camera in CAMERAS for level in PHOTONS for density in DENSITIES}


def best_threshold(predict: Callable[[np.ndarray, Camera], np.ndarray],
                   conditions: dict[str, SimulationConfig], frames: int, seed: int
                   ) -> tuple[float, float]:
    """The candidate threshold with the best mean Jaccard index at 100 nm over ``conditions``
    (``frames`` simulated frames each, seeds from ``seed``), and that mean in %.

    ``predict(frames, camera)`` returns the CNN's KDEs. Truth tables keep the emitters above the
    training targets' SNR floor."""
    from ..kde import find_peaks_in_frames
    from ..metrics import evaluate
    from ..simulate import detectable_truth, simulate_stack
    from ..training_data import KdeTrainingConfig

    min_snr = KdeTrainingConfig().kde_min_snr
    jaccard: dict[float, list[float]] = {t: [] for t in CANDIDATES}
    for j, config in enumerate(conditions.values()):
        stack = simulate_stack(frames, config, seed=seed + j, with_kde=False)
        psf = float(np.mean(config.psf_sigma_px))
        truth = detectable_truth(stack.truth, psf, float(np.mean(config.background)), min_snr)
        peaks = find_peaks_in_frames(predict(stack.frames, config.camera),
                                     config.fine_pixel_nm, min(CANDIDATES))
        for threshold in CANDIDATES:
            jaccard[threshold].append(evaluate(truth, peaks[peaks.score > threshold],
                                               MATCH_NM)["jaccard"])
    means = {t: float(np.mean(v)) for t, v in jaccard.items()}
    best = max(means, key=means.get)
    return float(best), means[best]


def fit_detection_thresholds(predict: Callable[[np.ndarray, Camera], np.ndarray],
                             frames: int = 16, size: int = 48,
                             psf_grid: Sequence[float] = PSF_GRID_PX,
                             progress: Callable[[str], None] = lambda _: None) -> dict:
    """The best threshold (:func:`best_threshold` over :func:`threshold_conditions`) per PSF
    width; returns the card's ``thresholds_by_psf`` record."""
    rows = []
    for k, psf in enumerate(psf_grid):
        threshold, jaccard = best_threshold(predict, threshold_conditions(psf, size), frames,
                                            THRESHOLD_SEED + 100 * k)
        rows.append((float(psf), threshold, jaccard))
        progress(f"PSF sigma {psf:g} px: threshold {threshold:g} (mean Jaccard at "
                 f"{MATCH_NM:g} nm {jaccard:.1f} %)")
    return threshold_record(rows, frames, size,
                            f"best mean Jaccard index at {MATCH_NM:g} nm over sCMOS/EMCCD x "
                            f"{'/'.join(PHOTONS)} x {'/'.join(f'{d:g}' for d in DENSITIES)} per "
                            "um2, blinking filaments")


def threshold_record(rows: Sequence[tuple[float, float, float]], frames: int, size: int,
                     criterion: str, seed: int = THRESHOLD_SEED) -> dict:
    """A card's ``thresholds_by_psf`` record from rows (PSF sigma in px, threshold, mean
    Jaccard at 100 nm in %), increasing in PSF width."""
    return {"psf_sigma_px": [r[0] for r in rows], "threshold": [r[1] for r in rows],
            "mean_jaccard_100nm": [round(r[2], 2) for r in rows],
            "frames_per_set": frames, "frame_size_px": size, "seed": seed,
            "criterion": criterion}


def check_threshold_table(table: dict) -> tuple[np.ndarray, np.ndarray]:
    """The (PSF widths, thresholds) of a card's record; ValueError when malformed."""
    try:
        psf = np.asarray(table["psf_sigma_px"], dtype=float)
        thresholds = np.asarray(table["threshold"], dtype=float)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"needs lists 'psf_sigma_px' and 'threshold' ({error})") from None
    if psf.ndim != 1 or psf.shape != thresholds.shape or len(psf) == 0:
        raise ValueError("'psf_sigma_px' and 'threshold' must be lists of the same length")
    if not (np.all(np.isfinite(psf)) and np.all(psf > 0) and np.all(np.diff(psf) > 0)):
        raise ValueError("'psf_sigma_px' must be increasing and > 0")
    if not (np.all(np.isfinite(thresholds)) and np.all(thresholds > 0)):
        raise ValueError("every 'threshold' must be > 0")
    return psf, thresholds


def threshold_for_psf(table: dict, psf_sigma_px: float) -> float:
    """The table's threshold at ``psf_sigma_px``: linear in log width, constant beyond the ends."""
    psf, thresholds = check_threshold_table(table)
    return float(np.interp(np.log(psf_sigma_px), np.log(psf), thresholds))
