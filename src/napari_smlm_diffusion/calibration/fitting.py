"""Fitting the reported uncertainties (:mod:`.variance_models`) to simulated validation data.

Both the per-molecule uncertainty and the per-pixel std map are variance models whose
parameters maximise the Gaussian likelihood of the true errors on validation sets, each set (one
regime: a microscope and a density) weighted equally, so that no regime is left out. The
likelihood is a proper scoring rule: it rewards uncertainties that are both calibrated and sharp,
so a model that reports one value per regime (calibrated on average but useless for telling
molecules apart) does not win. The fitted parameters are stored in the denoiser's model card
(``smlm-diffusion calibrate``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from .variance_models import SIGNAL_BLUR_NM, molecule_sigma, pixel_variance

VarianceModel = Callable[[np.ndarray, dict], np.ndarray]
STARTS = 8
PARAMETER_BOUND = 30.0  # |log-parameter| and |exponent| limit of the optimiser


def fit_variance_model(model: VarianceModel, sets: Sequence[dict], starts: np.ndarray
                       ) -> np.ndarray:
    """Parameters minimising the mean over sets of the mean Gaussian negative log-likelihood
    ``log v + e^2 / v`` of each set's squared errors ``e2``, with ``v = model(params, set)``
    (best of the rows of ``starts``; parameters bounded by ``PARAMETER_BOUND``)."""

    def loss(params: np.ndarray) -> float:
        total = 0.0
        for data in sets:
            variance = np.maximum(model(params, data), 1e-300)
            total += float(np.mean(np.log(variance) + data["e2"] / variance))
        return total / len(sets)

    bounds = [(-PARAMETER_BOUND, PARAMETER_BOUND)] * starts.shape[1]  # keeps exp() finite
    with np.errstate(over="ignore", invalid="ignore"):  # the optimiser probes extreme values
        fits = [minimize(loss, start, method="L-BFGS-B", bounds=bounds) for start in starts]
    return min(fits, key=lambda fit: np.nan_to_num(fit.fun, nan=np.inf)).x


def _starts(scale: float, log_scales: int, exponents: int = 0, seed: int = 0) -> np.ndarray:
    """Start points: ``log_scales`` log-parameters spread around ``log scale``, then
    ``exponents`` exponents around 0; the first start is exactly there."""
    starts = np.random.default_rng(seed).normal(0.0, 1.5, (STARTS, log_scales + exponents))
    starts[0] = 0.0
    starts[:, :log_scales] += np.log(scale)
    return starts


def uncertainty_model_from_parameters(params: np.ndarray) -> dict:
    """Model-card form of the parameters (log a, log b, log floor^2, log k, log q, log d)."""
    a, b, floor2, k, q, d = np.exp(params)
    return {"spread_weight": float(a), "crlb_weight": float(b),
            "floor_nm": float(np.sqrt(floor2)), "crowding_exponent": float(k),
            "peak_height_exponent": float(q), "detection_probability_exponent": float(d)}


def _molecule_variance(params: np.ndarray, data: dict) -> np.ndarray:
    model = uncertainty_model_from_parameters(params)
    return molecule_sigma(model, data["spread"], data["crlb"], data["density"],
                          data["peak_height"], data["detection_probability"]) ** 2


def fit_uncertainty_model(errors: Sequence[np.ndarray], spreads: Sequence[np.ndarray],
                          crlbs: Sequence[np.ndarray], densities: Sequence[np.ndarray],
                          peak_heights: Sequence[np.ndarray],
                          detection_probabilities: Sequence[np.ndarray]) -> dict:
    """Maximum-likelihood per-molecule uncertainty model, one set per validation regime.

    Parameters
    ----------
    errors, spreads, crlbs : sequences of arrays, nm
        Per set, the localization errors along one axis (both axes concatenated), the spread of
        the molecule over the samples (NaN: found in fewer than 2 samples, counted as 0) and its
        Cramer-Rao bound, for the molecules matched to the truth.
    densities : sequence of arrays, um^-2
        Local density of each molecule.
    peak_heights : sequence of arrays, KDE units
        Height of each molecule's peak in the posterior mean.
    detection_probabilities : sequence of arrays
        Share of the samples in which each molecule was found.

    Returns
    -------
    dict
        The keys of the model card's ``uncertainty_model``
        (:data:`.variance_models.MOLECULE_MODEL_KEYS`).
    """
    sets = [{"e2": np.asarray(e, float) ** 2, "spread": s, "crlb": c, "density": d,
             "peak_height": h, "detection_probability": p}
            for e, s, c, d, h, p in zip(errors, spreads, crlbs, densities, peak_heights,
                                        detection_probabilities, strict=True)]
    typical = float(np.mean([np.mean(data["e2"]) for data in sets]))
    exponents = np.log(np.linspace(0.05, 1.0, STARTS))[:, None]
    shuffled = exponents[np.random.default_rng(1).permutation(STARTS)]
    starts = np.concatenate([_starts(typical / 3.0, 3, 0), exponents, exponents[::-1], shuffled],
                            axis=1)
    return uncertainty_model_from_parameters(fit_variance_model(_molecule_variance, sets, starts))


def _pixel_calibration(params: np.ndarray) -> dict:
    """Model-card form of the parameters (log weight, log floor, signal exponent)."""
    weight, floor = np.exp(params[:2])
    return {"sample_variance_weight": float(weight), "floor": float(floor),
            "signal_exponent": float(params[2]), "signal_blur_nm": SIGNAL_BLUR_NM}


def _pixel_variance(params: np.ndarray, data: dict) -> np.ndarray:
    return pixel_variance(_pixel_calibration(params), data["variance"], data["signal"])


def fit_pixel_calibration(squared_errors: Sequence[np.ndarray], variances: Sequence[np.ndarray],
                          signals: Sequence[np.ndarray]) -> dict:
    """Maximum-likelihood calibration of the std map, one set per validation density.

    Parameters
    ----------
    squared_errors, variances, signals : sequences of arrays
        Per set, ``(true KDE - posterior mean)^2``, the sample variance and the local signal
        (:func:`.variance_models.local_signal`) of the pixels that carry signal.

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
    return _pixel_calibration(fit_variance_model(_pixel_variance, sets, _starts(typical, 2, 1)))
