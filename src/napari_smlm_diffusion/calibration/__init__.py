"""Calibration of the reported uncertainties: the variance models and their fit."""

from .fitting import fit_pixel_calibration, fit_uncertainty_model
from .variance_models import (
    MOLECULE_MODEL_KEYS,
    SIGNAL_BLUR_NM,
    local_signal,
    molecule_sigma,
    pixel_variance,
)

__all__ = ["MOLECULE_MODEL_KEYS", "SIGNAL_BLUR_NM", "fit_pixel_calibration",
           "fit_uncertainty_model", "local_signal", "molecule_sigma", "pixel_variance"]
