"""``calibrate --from-molecules``: refit the per-molecule model on saved molecules only."""

import shutil

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.pretrained import load_verified_state, resolve_weights
from napari_smlm_diffusion.weights import DENOISER_NAME


@pytest.fixture
def denoiser_copy(tmp_path):
    """The shipped denoiser and its calibrated card, copied where the test may rewrite them."""
    weights, card = resolve_weights(DENOISER_NAME)
    shutil.copy(weights, tmp_path / "denoiser.safetensors")
    shutil.copy(card, tmp_path / "denoiser.json")
    return tmp_path / "denoiser.safetensors"


def saved_molecules(regimes: list[str], exponent: float, seed: int = 0) -> pd.DataFrame:
    """Matched molecules as ``calibrate --molecules`` saves them, with errors drawn from a
    model whose uncertainty grows as fewer samples find a molecule."""
    rng = np.random.default_rng(seed)
    rows = []
    for regime in regimes:
        n = 3000
        detection = rng.uniform(0.05, 1.0, n)
        crlb = rng.uniform(3.0, 20.0, n)
        sigma = np.sqrt(crlb**2 + 12.0**2 * detection ** -exponent)
        rows.append(pd.DataFrame({
            "regime": regime, "frame": rng.integers(0, 16, n),
            "error_x_nm": rng.normal(0.0, sigma), "error_y_nm": rng.normal(0.0, sigma),
            "posterior_std_x_nm": rng.uniform(5.0, 30.0, n),
            "posterior_std_y_nm": rng.uniform(5.0, 30.0, n),
            "crlb_x_nm": crlb, "crlb_y_nm": crlb, "local_density_um2": rng.uniform(0.2, 3, n),
            "score": rng.uniform(0.3, 2.0, n), "detection_probability": detection}))
    return pd.concat(rows, ignore_index=True)


def test_refit_replaces_the_molecule_model_and_keeps_threshold_and_std_map(denoiser_copy,
                                                                             tmp_path):
    _, before = load_verified_state(denoiser_copy)
    regimes = list(before["calibration"]["regimes"])[:3]
    csv = tmp_path / "molecules.csv"
    saved_molecules(regimes, exponent=1.0).to_csv(csv, index=False)
    assert main(["calibrate", "--denoiser", str(denoiser_copy), "--from-molecules",
                 str(csv)]) == 0
    _, after = load_verified_state(denoiser_copy)  # the card still verifies the weights
    fitted = after["uncertainty_model"]
    assert fitted["detection_probability_exponent"] == pytest.approx(1.0, abs=0.15)
    assert after["calibration"]["uncertainty_model"] == fitted
    for key in ("posterior_mean_threshold", "pixel_variance_calibration"):
        assert after[key] == before[key]
    record = after["calibration"]["uncertainty_model_refit"]
    assert record == {"molecules": "molecules.csv", "frames_per_regime": 16}
    for name, values in after["calibration"]["regimes"].items():
        if name in regimes:  # diagnostics recomputed on the saved molecules, std map kept
            assert values["molecules"] == 3000 and values["rms_z"] == pytest.approx(1.0, abs=0.1)
        assert values["zms"] == before["calibration"]["regimes"][name]["zms"]


def test_refit_refuses_molecules_it_cannot_use(denoiser_copy, tmp_path, capsys):
    card_text = (tmp_path / "denoiser.json").read_text()
    _, before = load_verified_state(denoiser_copy)
    regime = next(iter(before["calibration"]["regimes"]))
    table = saved_molecules([regime], exponent=1.0)
    cases = {"no_detection.csv": (table.drop(columns="detection_probability"),
                                  "detection_probability"),
             "other_regime.csv": (table.assign(regime="a microscope never calibrated"),
                                  "a microscope never calibrated")}
    for name, (bad, named) in cases.items():
        bad.to_csv(tmp_path / name, index=False)
        assert main(["calibrate", "--denoiser", str(denoiser_copy), "--from-molecules",
                     str(tmp_path / name)]) == 2
        message = capsys.readouterr().err.strip().splitlines()
        assert len(message) == 1 and name in message[0] and named in message[0]
    assert (tmp_path / "denoiser.json").read_text() == card_text  # nothing written


def test_mean_nll_prefers_the_model_the_errors_were_drawn_from():
    """adapt's guard chooses by this score: the model that generated the errors scores lower
    than the shipped generic one and than a model reporting twice its sigma."""
    from napari_smlm_diffusion.calibration.validation_runs import (
        fit_molecules,
        mean_nll,
        molecule_arrays,
    )

    table = saved_molecules(["a", "b"], exponent=1.0)
    molecules = [molecule_arrays(rows) for _, rows in table.groupby("regime")]
    fitted = fit_molecules(molecules)
    doubled = dict(fitted, floor_nm=2.0 * fitted["floor_nm"])
    generic = load_verified_state(DENOISER_NAME)[1]["uncertainty_model"]
    assert mean_nll(fitted, molecules) < mean_nll(doubled, molecules)
    assert mean_nll(fitted, molecules) < mean_nll(generic, molecules)
    assert np.isnan(mean_nll(fitted, [molecule_arrays(table.iloc[:0])]))
