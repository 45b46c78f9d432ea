"""Maximum-likelihood recalibration recovers known variance models from simulated errors."""

import numpy as np
import pytest

from napari_smlm_diffusion.recalibration import fit_pixel_calibration, fit_uncertainty_model


def test_uncertainty_model_recovers_spread_floor_and_crowding():
    rng = np.random.default_rng(0)
    truth = {"spread_weight": 0.7, "floor_nm": 10.0, "density_exponent": 0.6}
    errors, spreads, precisions, densities = [], [], [], []
    for level in (0.3, 1.0, 3.0):  # three validation sets, as in bench_posterior --calibrate
        n = 6000
        spread = rng.uniform(2.0, 40.0, n)
        density = level * rng.uniform(0.5, 2.0, n)
        sigma = np.sqrt((truth["spread_weight"] * spread**2 + truth["floor_nm"] ** 2)
                        * density ** truth["density_exponent"])
        errors.append(rng.normal(0.0, sigma))
        spreads.append(spread)
        precisions.append(rng.uniform(5.0, 30.0, n))  # uninformative: weight should vanish
        densities.append(density)
    fitted = fit_uncertainty_model(errors, spreads, precisions, densities)
    assert fitted["spread_weight"] == pytest.approx(0.7, rel=0.1)
    assert fitted["floor_nm"] == pytest.approx(10.0, rel=0.15)
    assert fitted["density_exponent"] == pytest.approx(0.6, abs=0.08)
    assert fitted["precision_weight"] < 0.05


def test_pixel_calibration_recovers_weight_floor_and_signal_exponent():
    rng = np.random.default_rng(1)
    errors, variances, signals = [], [], []
    for scale in (0.01, 0.03, 0.1):
        variance = rng.exponential(scale, 20000)
        signal = rng.uniform(0.0, 0.5, 20000)
        expected = (0.6 * variance + 0.02) * (signal + 1e-3) ** 0.3
        errors.append(rng.normal(0.0, np.sqrt(expected)) ** 2)
        variances.append(variance)
        signals.append(signal)
    fitted = fit_pixel_calibration(errors, variances, signals)
    assert fitted["sample_variance_weight"] == pytest.approx(0.6, rel=0.1)
    assert fitted["floor"] == pytest.approx(0.02, rel=0.1)
    assert fitted["signal_exponent"] == pytest.approx(0.3, abs=0.03)
