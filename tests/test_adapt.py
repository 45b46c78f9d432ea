"""Adapting the models to one microscope: both weights with cards, paired, calibrated, resumable."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from napari_smlm_diffusion.adapt import (
    FINE_TUNE_MARGIN,
    Setup,
    adapt_models,
    efficiency_advice,
    matched_training,
)
from napari_smlm_diffusion.adapt_stack_check import StackExcerpt
from napari_smlm_diffusion.calibration.detection_thresholds import CANDIDATES
from napari_smlm_diffusion.camera import Camera
from napari_smlm_diffusion.errors import InputError
from napari_smlm_diffusion.pretrained import load_verified_state
from napari_smlm_diffusion.weights import DENOISER_NAME

SETUP = Setup(camera=Camera(pixel_size=65.0), psf_sigma_nm=125.0, photons=400.0,
              background=15.0, density=1.0)


def test_matched_training_data_is_the_setup():
    config = matched_training(SETUP, steps=10, seed=3)
    assert config.pixel_size_nm == (65.0, 65.0) and config.fixed_camera["pixel_size"] == 65.0
    low, high = config.psf_sigma_px
    assert low < 125.0 / 65.0 < high and config.photons[0] < 400 < config.photons[1]
    assert config.density[0] < 1.0 and config.density[1] >= 3.0  # holds at 3x the density
    assert config.selection == "jaccard"
    assert matched_training(SETUP, steps=10, seed=3, objective="efficiency").selection == (
        "efficiency")


def test_adapt_writes_paired_calibrated_models_and_resumes(tmp_path):
    from napari_smlm_diffusion.simulate import simulate_stack

    messages = []
    own = simulate_stack(20, SETUP.simulation(48, 3.0), seed=7, with_kde=False).frames
    out = adapt_models(SETUP, tmp_path / "model", kde_steps=2, denoiser_steps=2,
                       calibration_frames=2, report=messages.append,
                       own_frames=StackExcerpt.middle(own, 8))
    _, kde_card = load_verified_state(out / "kde_cnn.safetensors")
    _, denoiser_card = load_verified_state(out / "denoiser.safetensors")
    assert denoiser_card["kde_cnn_sha256"] == kde_card["sha256"]
    assert kde_card["adapted_to"]["psf_sigma_nm"] == 125.0
    # the fine-tuned CNN was kept or not by the default objective: molecules found
    assert kde_card["adapt_objective"] == "jaccard"
    assert kde_card["validation"]["selection"] == "jaccard"
    assert kde_card["validation"]["score"] == kde_card["validation"]["mean_jaccard_100nm"]
    # the threshold is chosen as the generic table's: best Jaccard at 100 nm, at the setup's PSF
    table = kde_card["thresholds_by_psf"]
    assert table["psf_sigma_px"] == [pytest.approx(125.0 / 65.0)]
    assert table["threshold"] == [kde_card["detection_threshold"]]
    assert kde_card["detection_threshold"] in CANDIDATES
    assert any("detection threshold" in m for m in messages)
    assert set(denoiser_card["uncertainty_model"]) == {
        "spread_weight", "crlb_weight", "floor_nm", "crowding_exponent", "peak_height_exponent",
        "detection_probability_exponent"}
    # the refitted uncertainty model is kept only when it scores better on held-out frames
    choice = denoiser_card["calibration"]["uncertainty_model_choice"]
    scores = choice["held_out_mean_nll"]
    generic = load_verified_state(DENOISER_NAME)[1]["uncertainty_model"]
    refitted_better = None not in scores.values() and scores["refitted"] < scores["generic"]
    assert choice["chosen"] == ("refitted" if refitted_better else "generic")
    assert any(m.startswith(f"uncertainty model: {choice['chosen']}") for m in messages)
    # ... and the label-free check on the user's frames has the last word when it has pairs
    final = denoiser_card["calibration"]["label_free_check_on_stack"]["uncertainty_model"]
    assert set(final["candidates"]) == {"generic", "refitted"}
    if final["by"].startswith("held-out"):
        assert final["chosen"] == choice["chosen"]
    expected = generic if final["chosen"] == "generic" else choice["refitted_model"]
    assert denoiser_card["uncertainty_model"] == expected
    assert json.loads((out / "adapt.json").read_text())["calibrated"] is True
    # the label-free check of both pairs on the user's own frames 7-14 (the middle 8 of 20)
    check = denoiser_card["calibration"]["label_free_check_on_stack"]
    assert check["frames"] == [6, 14]
    for pair in ("generic", "adapted"):
        assert check[pair]["localizations"] > 0
        assert check[pair]["reading"].startswith(("uncertainties", "no check: only"))
        assert any(m.startswith(f"{pair} models on your frames 7-14: ") for m in messages)
    assert any("min left" in m for m in messages)
    again = []
    adapt_models(SETUP, out, kde_steps=2, denoiser_steps=2, calibration_frames=2,
                 report=again.append)
    assert not any("training" in m or "threshold" in m for m in again)  # all stages done
    # measured again with a last-digit difference (a package upgrade): the same run resumes
    remeasured = replace(SETUP, photons=SETUP.photons * 1.001)
    adapt_models(remeasured, out, kde_steps=2, denoiser_steps=2, calibration_frames=2,
                 report=again.append)
    assert json.loads((out / "adapt.json").read_text())["setup"] == SETUP.to_dict()
    other = Setup(camera=Camera(pixel_size=100.0), psf_sigma_nm=125.0, photons=400.0,
                  background=15.0, density=1.0)
    with pytest.raises(InputError, match="another setup"):
        adapt_models(other, out, kde_steps=2, denoiser_steps=2)
    with pytest.raises(InputError, match="started with the objective jaccard"):
        adapt_models(SETUP, out, kde_steps=2, denoiser_steps=2, objective="efficiency")
    with pytest.raises(InputError, match="objective must be one of jaccard, efficiency"):
        adapt_models(SETUP, tmp_path / "new", objective="recall")


def _write_log(run, entries):
    """A fine-tuning run's validations, and the folder's card with the weights kept by Jaccard
    (the generic ones, step 0, unless beaten by the margin)."""
    run.mkdir(exist_ok=True)
    (run / "log.jsonl").write_text("".join(
        json.dumps({"step": step, "loss": 0.01, "mean_jaccard_100nm": jaccard,
                    "mean_efficiency": efficiency}) + "\n"
        for step, jaccard, efficiency in entries))
    kept = max(entries, key=lambda e: e[1] - (FINE_TUNE_MARGIN if e[0] else 0.0))[0]
    (run.parent / "kde_cnn.json").write_text(json.dumps({"name": "kde_cnn", "step": kept}))


def test_efficiency_advice_only_when_better_placed_weights_were_turned_down(tmp_path):
    run = tmp_path / "kde-run"
    # the bright setup's pattern (bench_finetune_objective): fewer found, better placed
    _write_log(run, [(0, 57.1, 38.4), (250, 55.2, 40.5), (500, 56.6, 40.7)])
    advice = efficiency_advice(tmp_path, "jaccard")
    assert "40.7 at step 500" in advice and "generic 38.4" in advice
    assert "objective 'efficiency'" in advice and "new folder" in advice
    assert efficiency_advice(tmp_path, "efficiency") is None  # already chosen by placement
    # the fine-tuned CNN was kept (it found more): nothing was turned down
    _write_log(run, [(0, 50.0, 30.0), (250, 50.0 + FINE_TUNE_MARGIN + 0.1, 33.0)])
    assert efficiency_advice(tmp_path, "jaccard") is None
    # placement within the margin: no advice
    _write_log(run, [(0, 50.0, 30.0), (250, 49.0, 30.0 + FINE_TUNE_MARGIN - 0.1)])
    assert efficiency_advice(tmp_path, "jaccard") is None
    assert efficiency_advice(tmp_path / "no-run", "jaccard") is None


def test_bad_setup_is_refused():
    with pytest.raises(ValueError, match="photons must be > 0"):
        Setup(camera=Camera(), psf_sigma_nm=120.0, photons=0.0, background=10.0, density=1.0)


def test_adapt_command_measures_the_setup_and_refuses_to_overwrite(tmp_path):
    import argparse

    from napari_smlm_diffusion.cli import main
    from napari_smlm_diffusion.cli.adapt import setup_from_stack

    assert main(["simulate", str(tmp_path / "sim"), "--frames", "60", "--size", "48",
                 "--density", "0.3", "--background", "20-60", "--photons", "2000"]) == 0
    stack = str(tmp_path / "sim" / "stack.tif")
    args = argparse.Namespace(stack=stack, channel=None, camera="sCMOS", pixel_size=None,
                              baseline=None, sensitivity=None, em_gain=None,
                              quantum_efficiency=None, read_noise=None, psf_sigma=None,
                              photons=None, background=None, density=None)
    setup = setup_from_stack(args)
    assert setup.camera.pixel_size == 100.0 and setup.psf_sigma_nm == pytest.approx(120.0)
    assert 1000 < setup.photons < 4000 and 10 < setup.background < 100
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "adapt.json").write_text("{}")
    assert main(["adapt", stack, "-o", str(tmp_path / "model")]) == 2


def test_measured_photons_hold_on_crowded_bright_filaments():
    """Bright molecules crowd along filaments at 1 per um^2: the inspection's aperture photometry
    counts groups of them as one spot (5.9x the photons); adapt measures photons and density on
    the shipped CNN's localizations (1.7x: the brighter molecules are the ones detected)."""
    import numpy as np

    from napari_smlm_diffusion.adapt import measure_setup
    from napari_smlm_diffusion.simulate import simulate_stack
    from napari_smlm_diffusion.training_data import MICROSCOPE_CORNERS

    scope = MICROSCOPE_CORNERS["bright/130nm/bg250"]
    stack = simulate_stack(60, scope.config(64, 1.0), seed=660001)
    truth = float(np.median(stack.truth.photons[stack.truth.photons > 0.2 * scope.photons[0]]))
    messages = []
    setup = measure_setup(stack.frames, scope.camera, 130.0, report=messages.append)
    assert truth / 1.5 < setup.photons < 2.5 * truth, (setup.photons, truth)
    assert setup.background == pytest.approx(scope.background, rel=0.1)
    assert 0.3 < setup.density < 1.5
    assert "KDE CNN's localizations" in messages[0]
    given = measure_setup(stack.frames, scope.camera, 130.0, photons=1.0, background=2.0,
                          density=3.0, report=messages.append)
    assert (given.photons, given.background, given.density) == (1.0, 2.0, 3.0)
    assert len(messages) == 1  # nothing measured when everything is given


def test_the_uncertainty_model_closest_to_one_on_the_users_frames_is_chosen():
    from napari_smlm_diffusion.adapt_stack_check import CHOICE_MIN_PAIRS, chosen_model

    many = CHOICE_MIN_PAIRS
    checks = {"refitted": {"rms_spread": 1.3, "pairs": many},
              "generic": {"rms_spread": 0.8, "pairs": many}}
    assert chosen_model(checks, "refitted")[0] == "generic"  # 1.25x off beats 1.3x off
    checks["generic"]["rms_spread"] = 0.7
    assert chosen_model(checks, "generic")[0] == "refitted"
    checks["generic"]["pairs"] = many - 1  # too few pairs: the held-out choice stands
    assert chosen_model(checks, "generic") == ("generic", f"held-out frames (fewer than {many} "
                                                          "label-free pairs)")
    no_check = {"refitted": {"reading": "no check: only 3 molecules"}, "generic": {}}
    assert chosen_model(no_check, "refitted")[0] == "refitted"


def test_recomputing_with_the_card_model_gives_the_posterior_table_back():
    # the label-free choice re-applies a model to a table of many frames: the local density
    # must stay per frame, as the posterior computed it
    from napari_smlm_diffusion.posterior import (
        PosteriorEngine,
        iter_posterior,
        with_uncertainty_model,
    )
    from napari_smlm_diffusion.posterior_settings import PosteriorSettings
    from napari_smlm_diffusion.simulate import simulate_stack

    engine = PosteriorEngine.load(device="cpu")
    config = SETUP.simulation(48, 2.0)
    frames = simulate_stack(3, config, seed=5, with_kde=False).frames
    table = pd.concat([b.localizations for b in iter_posterior(
        frames, config.camera, engine, range(3), PosteriorSettings(samples=2, steps=2),
        SETUP.psf_sigma_nm)], ignore_index=True)
    assert table["frame"].nunique() > 1
    again = with_uncertainty_model(table, engine.card.uncertainty_model)
    for column in ("uncertainty_x_nm", "uncertainty_y_nm", "uncertainty_nm"):
        np.testing.assert_allclose(again[column], table[column], rtol=1e-9)
