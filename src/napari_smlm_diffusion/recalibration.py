"""Post-hoc recalibration of the posterior's uncertainties on simulated validation data.

Both the per-molecule uncertainty and the per-pixel std map are variance models whose
parameters maximise the Gaussian likelihood of the true errors on validation sets, each set (one
density) weighted equally. The likelihood is a proper scoring rule: it rewards uncertainties that
are both calibrated and sharp, so a model that reports one value per density (calibrated on
average but useless for telling molecules apart) does not win. The fitted parameters are stored in
the denoiser's model card and applied by :func:`posterior.reported_uncertainty` and
:func:`posterior.reported_variance`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.optimize import minimize

VarianceModel = Callable[[np.ndarray, dict], np.ndarray]
STARTS = 8
SIGNAL_BLUR_NM = 500.0  # width of the neighbourhood whose structure scales the std-map floor
SIGNAL_OFFSET = 1e-3  # KDE units; keeps the scale finite far from any structure
UNCALIBRATED_UNCERTAINTY = {"spread_weight": 1.0, "precision_weight": 0.0, "floor_nm": 0.0,
                            "density_exponent": 0.0}


def calibrated_sigma(model: dict, spread: np.ndarray, precision: np.ndarray,
                     density: np.ndarray) -> np.ndarray:
    """Per-axis uncertainty ``sqrt((a spread^2 + b precision^2 + floor_nm^2) density^k)``.

    Parameters
    ----------
    model : dict
        Some of ``spread_weight`` a, ``precision_weight`` b, ``floor_nm``, ``density_exponent`` k
        (missing ones as in ``UNCALIBRATED_UNCERTAINTY``: the spread alone).
    spread, precision : arrays, nm
        Spread over the samples (NaN where undefined, counted as 0) and information-matrix
        precision.
    density : array, um^-2
        Local density of each molecule.

    Returns
    -------
    array, nm; NaN where the variance is 0 (no spread and no floor or precision term).
    """
    unknown = set(model) - set(UNCALIBRATED_UNCERTAINTY)
    if unknown:
        raise ValueError(f"unknown uncertainty_model keys {sorted(unknown)} in the model card; "
                         f"expected {sorted(UNCALIBRATED_UNCERTAINTY)}")
    model = {**UNCALIBRATED_UNCERTAINTY, **model}
    variance = (model["spread_weight"] * np.nan_to_num(np.asarray(spread, float)) ** 2
                + model["precision_weight"] * np.asarray(precision, float) ** 2
                + model["floor_nm"] ** 2) * np.asarray(density, float) ** model["density_exponent"]
    with np.errstate(invalid="ignore"):
        return np.where(variance > 0, np.sqrt(variance), np.nan)


def local_signal(mean: np.ndarray, fine_pixel_nm: float,
                 blur_nm: float = SIGNAL_BLUR_NM) -> np.ndarray:
    """Posterior mean blurred by a Gaussian of ``blur_nm`` (each frame of a stack on its own):
    how much structure is near a pixel."""
    sigma = blur_nm / fine_pixel_nm
    return gaussian_filter(np.asarray(mean, np.float64),
                           sigma=(0.0,) * (np.ndim(mean) - 2) + (sigma, sigma))


def calibrated_pixel_variance(calibration: dict, sample_variance: np.ndarray,
                              signal: np.ndarray | None = None) -> np.ndarray:
    """``(sample_variance_weight * sample variance + floor) * (signal + SIGNAL_OFFSET) **
    signal_exponent`` (the reported std map squared); ``signal`` is :func:`local_signal`,
    needed only when the calibration has a signal exponent."""
    variance = calibration["sample_variance_weight"] * sample_variance + calibration["floor"]
    exponent = calibration.get("signal_exponent", 0.0)
    if exponent == 0.0:
        return variance
    if signal is None:
        raise ValueError("this std-map calibration needs the local signal (local_signal)")
    return variance * (signal + SIGNAL_OFFSET) ** exponent


def _fit(model: VarianceModel, sets: Sequence[dict], starts: np.ndarray) -> np.ndarray:
    """Parameters minimising the mean over sets of the mean Gaussian negative log-likelihood
    ``log v + e^2 / v`` of each set's squared errors ``e2`` (best of several starts)."""

    def loss(params: np.ndarray) -> float:
        total = 0.0
        for data in sets:
            variance = np.maximum(model(params, data), 1e-300)
            total += float(np.mean(np.log(variance) + data["e2"] / variance))
        return total / len(sets)

    fits = [minimize(loss, start, method="L-BFGS-B") for start in starts]
    return min(fits, key=lambda fit: fit.fun).x


def _starts(scale: float, log_scales: int, exponents: int = 0, seed: int = 0) -> np.ndarray:
    """Start points: ``log_scales`` log-parameters spread around ``log scale``, then
    ``exponents`` exponents around 0; the first start is exactly there."""
    starts = np.random.default_rng(seed).normal(0.0, 1.5, (STARTS, log_scales + exponents))
    starts[0] = 0.0
    starts[:, :log_scales] += np.log(scale)
    return starts


def _uncertainty_model(params: np.ndarray) -> dict:
    """Model-card form of the parameters (log a, log b, log floor^2, k)."""
    a, b, floor2 = np.exp(params[:3])
    return {"spread_weight": float(a), "precision_weight": float(b),
            "floor_nm": float(np.sqrt(floor2)), "density_exponent": float(params[3])}


def _molecule_variance(params: np.ndarray, data: dict) -> np.ndarray:
    return calibrated_sigma(_uncertainty_model(params), data["spread"], data["precision"],
                            data["density"]) ** 2


def fit_uncertainty_model(errors: Sequence[np.ndarray], spreads: Sequence[np.ndarray],
                          precisions: Sequence[np.ndarray],
                          densities: Sequence[np.ndarray]) -> dict:
    """Maximum-likelihood per-molecule uncertainty model, one set per validation density.

    Parameters
    ----------
    errors, spreads, precisions : sequences of arrays, nm
        Per set, the localization errors along one axis (both axes concatenated), the spread of
        the molecule over the samples (NaN: found in fewer than 2 samples, counted as 0) and its
        information-matrix precision, for the molecules matched to the truth.
    densities : sequence of arrays, um^-2
        Local density of each molecule (:func:`posterior.local_density`).

    Returns
    -------
    dict
        ``spread_weight``, ``precision_weight``, ``floor_nm``, ``density_exponent`` (the keys of
        the model card's ``uncertainty_model``).
    """
    sets = [{"e2": np.asarray(e, float) ** 2, "spread": s, "precision": p, "density": d}
            for e, s, p, d in zip(errors, spreads, precisions, densities, strict=True)]
    typical = float(np.mean([np.mean(data["e2"]) for data in sets]))
    return _uncertainty_model(_fit(_molecule_variance, sets, _starts(typical / 3.0, 3, 1)))


def _pixel_calibration(params: np.ndarray) -> dict:
    """Model-card form of the parameters (log weight, log floor, signal exponent)."""
    weight, floor = np.exp(params[:2])
    return {"sample_variance_weight": float(weight), "floor": float(floor),
            "signal_exponent": float(params[2]), "signal_blur_nm": SIGNAL_BLUR_NM}


def _pixel_variance(params: np.ndarray, data: dict) -> np.ndarray:
    return calibrated_pixel_variance(_pixel_calibration(params), data["variance"],
                                     data["signal"])


def fit_pixel_calibration(squared_errors: Sequence[np.ndarray], variances: Sequence[np.ndarray],
                          signals: Sequence[np.ndarray]) -> dict:
    """Maximum-likelihood calibration of the std map, one set per validation density.

    Parameters
    ----------
    squared_errors, variances, signals : sequences of arrays
        Per set, ``(true KDE - posterior mean)^2``, the sample variance and the local signal
        (:func:`local_signal`, blurred by ``SIGNAL_BLUR_NM``) of the pixels that carry signal.

    Returns
    -------
    dict
        ``sample_variance_weight``, ``floor``, ``signal_exponent`` and ``signal_blur_nm`` (the
        model card's ``pixel_variance_calibration``).
    """
    sets = [{"e2": np.asarray(e, float), "variance": np.asarray(v, float),
             "signal": np.asarray(g, float)}
            for e, v, g in zip(squared_errors, variances, signals, strict=True)]
    typical = float(np.mean([np.mean(data["e2"]) for data in sets]))
    return _pixel_calibration(_fit(_pixel_variance, sets, _starts(typical, 2, 1)))
