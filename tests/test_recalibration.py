"""Maximum-likelihood recalibration recovers known variance models from simulated errors."""

import numpy as np
import pytest

from napari_smlm_diffusion.calibration import fit_pixel_calibration, fit_uncertainty_model


def test_uncertainty_model_recovers_every_term():
    rng = np.random.default_rng(0)
    truth = {"spread_weight": 0.7, "crlb_weight": 1.5, "floor_nm": 10.0,
             "crowding_exponent": 0.6, "peak_height_exponent": 0.5,
             "detection_probability_exponent": 0.8}
    errors, spreads, crlbs, densities, peaks, detections = [], [], [], [], [], []
    for level in (0.3, 1.0, 3.0):  # three validation regimes
        n = 6000
        spread = rng.uniform(2.0, 40.0, n)
        crlb = rng.uniform(3.0, 30.0, n)
        density = level * rng.uniform(0.5, 2.0, n)
        peak = rng.uniform(0.3, 3.0, n)
        detection = rng.uniform(0.1, 1.0, n)
        sigma = np.sqrt(crlb**2 + (truth["spread_weight"] * spread**2
                                   + truth["crlb_weight"] * crlb**2 + truth["floor_nm"] ** 2)
                        * (1 + density) ** truth["crowding_exponent"]
                        * peak ** -truth["peak_height_exponent"]
                        * detection ** -truth["detection_probability_exponent"])
        errors.append(rng.normal(0.0, sigma))
        spreads.append(spread)
        crlbs.append(crlb)
        densities.append(density)
        peaks.append(peak)
        detections.append(detection)
    fitted = fit_uncertainty_model(errors, spreads, crlbs, densities, peaks, detections)
    assert fitted["spread_weight"] == pytest.approx(0.7, rel=0.15)
    assert fitted["crlb_weight"] == pytest.approx(1.5, rel=0.2)
    assert fitted["floor_nm"] == pytest.approx(10.0, rel=0.25)
    assert fitted["crowding_exponent"] == pytest.approx(0.6, abs=0.12)
    assert fitted["peak_height_exponent"] == pytest.approx(0.5, abs=0.1)
    assert fitted["detection_probability_exponent"] == pytest.approx(0.8, abs=0.1)


def test_uninformative_terms_vanish_from_the_fit():
    rng = np.random.default_rng(2)
    n = 8000
    crlb = rng.uniform(5.0, 20.0, n)
    errors = rng.normal(0.0, crlb)  # errors at exactly the CRLB: nothing else is needed
    fitted = fit_uncertainty_model([errors], [rng.uniform(1.0, 40.0, n)], [crlb],
                                   [rng.uniform(0.1, 3.0, n)], [rng.uniform(0.3, 3.0, n)],
                                   [rng.uniform(0.1, 1.0, n)])
    assert fitted["spread_weight"] < 0.02 and fitted["crlb_weight"] < 0.05
    assert fitted["floor_nm"] < 1.5


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
