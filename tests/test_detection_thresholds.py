"""Detection thresholds per PSF width: the table, the card, the jobs and the CLI."""

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_smlm_diffusion.calibration.detection_thresholds import (
    CANDIDATES,
    fit_detection_thresholds,
    threshold_for_psf,
)
from napari_smlm_diffusion.cli import main
from napari_smlm_diffusion.io import read_localizations
from napari_smlm_diffusion.model_cards import CardError, parse_kde_cnn_card
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.pretrained import weights_dir
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack

TABLE = {"psf_sigma_px": [1.0, 2.0], "threshold": [0.3, 0.1]}


def test_table_is_linear_in_log_width_and_constant_beyond_its_ends():
    assert threshold_for_psf(TABLE, 1.0) == pytest.approx(0.3)
    assert threshold_for_psf(TABLE, 2.0) == pytest.approx(0.1)
    assert threshold_for_psf(TABLE, np.sqrt(2.0)) == pytest.approx(0.2)
    assert threshold_for_psf(TABLE, 0.5) == pytest.approx(0.3)
    assert threshold_for_psf(TABLE, 4.0) == pytest.approx(0.1)


@pytest.mark.parametrize("table, message", [
    ({"threshold": [0.3]}, "needs lists"),
    ({"psf_sigma_px": [1.0, 2.0], "threshold": [0.3]}, "same length"),
    ({"psf_sigma_px": [2.0, 1.0], "threshold": [0.3, 0.1]}, "increasing"),
    ({"psf_sigma_px": [1.0, 2.0], "threshold": [0.3, -0.1]}, "> 0"),
])
def test_malformed_table_in_a_card_is_refused_naming_the_field(table, message):
    card = json.loads((weights_dir() / "kde_cnn.json").read_text())
    with pytest.raises(CardError, match=f"my_cnn.json: field 'thresholds_by_psf' .*{message}"):
        parse_kde_cnn_card({**card, "thresholds_by_psf": table}, "my_cnn.json")


def test_card_without_a_table_uses_its_single_threshold():
    card = json.loads((weights_dir() / "kde_cnn.json").read_text())
    card.pop("thresholds_by_psf", None)
    parsed = parse_kde_cnn_card(card, "kde_cnn.json")
    assert parsed.threshold_for(1.9) == parsed.detection_threshold
    with_table = replace(parsed, thresholds_by_psf=TABLE)
    assert with_table.threshold_for(2.0) == pytest.approx(0.1)
    assert with_table.threshold_for(None) == parsed.detection_threshold


@pytest.fixture(scope="module")
def sample():
    config = SimulationConfig(size=(32, 32), density=1.0, photons=(1000.0, 5000.0),
                              background=30.0, psf_sigma_px=1.2, layout="filaments")
    return simulate_stack(4, config, seed=5150), config


def test_jobs_use_the_threshold_for_their_psf_width(sample):
    stack, config = sample
    engine = KdeEngine.load(device="cpu")
    psf_nm = 1.2 * config.camera.pixel_size
    found = {}
    for name, table in {"low": {"psf_sigma_px": [1.0, 1.5], "threshold": [0.05, 0.05]},
                        "high": {"psf_sigma_px": [1.0, 1.5], "threshold": [50.0, 50.0]}}.items():
        engine.card = replace(engine.card, thresholds_by_psf=table)
        found[name] = len(run_kde(stack.frames, config.camera, engine,
                                  psf_sigma_nm=psf_nm).localizations)
    assert found["high"] == 0 < found["low"]
    engine.threshold = 0.05  # the user's threshold wins over the card's
    assert len(run_kde(stack.frames, config.camera, engine, psf_sigma_nm=psf_nm)
               .localizations) == found["low"]


def test_localize_threshold_option(tmp_path):
    assert main(["simulate", str(tmp_path / "sim"), "--frames", "3", "--size", "32"]) == 0
    counts = []
    for threshold in ("0.05", "0.9"):
        out = tmp_path / f"locs_{threshold}.csv"
        assert main(["localize", str(tmp_path / "sim" / "stack.tif"), "-o", str(out),
                     "--threshold", threshold]) == 0
        counts.append(len(read_localizations(out)))
    assert counts[0] > counts[1]
    with pytest.raises(SystemExit) as exit_code:
        main(["localize", str(tmp_path / "sim" / "stack.tif"), "-o", str(tmp_path / "x.csv"),
              "--threshold", "-1"])
    assert exit_code.value.code == 2
    assert not (tmp_path / "x.csv").exists()


def test_fit_follows_the_height_of_the_peaks():
    """The same CNN with its output halved needs half the threshold: the fit picks thresholds
    from the data, among the candidates."""
    engine = KdeEngine.load(device="cpu")
    full = fit_detection_thresholds(engine.predict, frames=2, size=32, psf_grid=(1.3,))
    half = fit_detection_thresholds(lambda frames, camera: 0.5 * engine.predict(frames, camera),
                                    frames=2, size=32, psf_grid=(1.3,))
    assert full["psf_sigma_px"] == [1.3] and full["threshold"][0] in CANDIDATES
    assert abs(half["threshold"][0] - full["threshold"][0] / 2) <= 0.05 + 1e-9
    assert half["mean_jaccard_100nm"][0] == pytest.approx(full["mean_jaccard_100nm"][0], abs=3.0)
