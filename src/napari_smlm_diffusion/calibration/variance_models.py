"""The reported uncertainties as functions of what the posterior measures.

Per molecule and axis::

    sigma^2 = crlb^2 + (a spread^2 + b crlb^2 + floor^2) (1 + density)^k peak^-q detection^-d,
    a, b, floor, k, q, d >= 0

with ``spread`` the molecule's spread over the posterior samples, ``crlb`` its own Cramer-Rao
bound (information-matrix precision from its photons, the background and its overlapping
neighbours), ``density`` the local density in um^-2 and ``peak`` the height of its peak in the
posterior mean (KDE units, at least ``PEAK_HEIGHT_FLOOR``): a faint peak is a molecule the
samples agree less on; ``detection`` the share of the samples in which the molecule was found
(at least ``DETECTION_PROBABILITY_FLOOR``): one that few samples show is often matched to a
neighbour's place or not there at all. The CRLB is a hard lower bound (no reported sigma is
below what the photons allow) and sigma grows with the spread, the CRLB and the density and
shrinks as the peak rises and as more samples find the molecule. Per pixel, the std map is
``sqrt((w sample_variance + floor) (local signal + 1e-3)^k)``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SIGNAL_BLUR_NM = 500.0  # width of the neighbourhood whose structure scales the std-map floor
SIGNAL_OFFSET = 1e-3  # KDE units; keeps the scale finite far from any structure
PEAK_HEIGHT_FLOOR = 0.05  # KDE units; keeps peak^-q finite
DETECTION_PROBABILITY_FLOOR = 0.05  # keeps detection^-d finite
MOLECULE_MODEL_KEYS = ("spread_weight", "crlb_weight", "floor_nm", "crowding_exponent",
                       "peak_height_exponent", "detection_probability_exponent")
#: Before calibration: the CRLB and the spread over the samples in quadrature.
UNCALIBRATED_UNCERTAINTY = {"spread_weight": 1.0, "crlb_weight": 0.0, "floor_nm": 0.0,
                            "crowding_exponent": 0.0, "peak_height_exponent": 0.0,
                            "detection_probability_exponent": 0.0}


def check_molecule_model(model: dict) -> dict:
    """The model with every key, or ValueError naming unknown or negative parameters."""
    unknown = set(model) - set(MOLECULE_MODEL_KEYS)
    if unknown:
        raise ValueError(f"unknown uncertainty_model keys {sorted(unknown)} in the model card; "
                         f"expected {list(MOLECULE_MODEL_KEYS)} (a card calibrated by an older "
                         "version: run smlm-diffusion calibrate)")
    model = {**UNCALIBRATED_UNCERTAINTY, **model}
    negative = [key for key, value in model.items() if not value >= 0]
    if negative:
        raise ValueError(f"uncertainty_model parameters {negative} must be >= 0")
    return model


def molecule_sigma(model: dict, spread: np.ndarray, crlb: np.ndarray, density: np.ndarray,
                   peak_height: np.ndarray | None = None,
                   detection_probability: np.ndarray | None = None) -> np.ndarray:
    """Reported per-axis uncertainty in nm (see the module docstring).

    Parameters
    ----------
    model : dict
        Some of ``MOLECULE_MODEL_KEYS`` (missing ones as in ``UNCALIBRATED_UNCERTAINTY``).
    spread : array, nm
        Spread over the samples (NaN where undefined, counted as 0).
    crlb : array, nm
        The molecule's Cramer-Rao bound along the axis.
    density : array, um^-2
        Local density of each molecule.
    peak_height : array, KDE units, optional
        Height of each molecule's peak in the posterior mean; needed when the model has a
        ``peak_height_exponent``.
    detection_probability : array, optional
        Share of the samples in which each molecule was found; needed when the model has a
        ``detection_probability_exponent``.
    """
    model = check_molecule_model(model)
    spread2 = np.nan_to_num(np.asarray(spread, float)) ** 2
    crlb2 = np.asarray(crlb, float) ** 2
    extra = (model["spread_weight"] * spread2 + model["crlb_weight"] * crlb2
             + model["floor_nm"] ** 2)
    scale = (1.0 + np.asarray(density, float)) ** model["crowding_exponent"]
    for key, values, floor, what in (
            ("peak_height_exponent", peak_height, PEAK_HEIGHT_FLOOR, "peak heights"),
            ("detection_probability_exponent", detection_probability,
             DETECTION_PROBABILITY_FLOOR, "detection probabilities")):
        if model[key] > 0:
            if values is None:
                raise ValueError(f"this uncertainty model needs the molecules' {what}")
            scale = scale * np.maximum(np.asarray(values, float), floor) ** -model[key]
    return np.sqrt(crlb2 + extra * scale)


def local_signal(mean: np.ndarray, fine_pixel_nm: float,
                 blur_nm: float = SIGNAL_BLUR_NM) -> np.ndarray:
    """Posterior mean blurred by a Gaussian of ``blur_nm`` (each frame of a stack on its own):
    how much structure is near a pixel."""
    sigma = blur_nm / fine_pixel_nm
    return gaussian_filter(np.asarray(mean, np.float64),
                           sigma=(0.0,) * (np.ndim(mean) - 2) + (sigma, sigma))


def pixel_variance(calibration: dict, sample_variance: np.ndarray,
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
