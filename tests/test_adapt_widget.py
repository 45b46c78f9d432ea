"""Issue 15, GUI: "Adapt models to this data" in a worker with Cancel (resumable) and the loss
curves; the KDE CNN and Posterior tabs use the adapted models through "Model folder"."""

import json

import numpy as np
import pytest

from napari_helpers import TIMEOUT_MS, add_widget, errors_since, notification_count, run_and_wait
from napari_smlm_diffusion._napari.widgets.adapt_widget import AdaptWidget
from napari_smlm_diffusion._napari.widgets.kde_layers import POINTS_NAME
from napari_smlm_diffusion.camera import PRESETS
from napari_smlm_diffusion.pretrained import load_verified_state
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_frames
from napari_smlm_diffusion.training_log import training_log

SCMOS = PRESETS["sCMOS"]


def test_training_log_skips_a_partial_line_and_keeps_the_last_entry_of_a_step(tmp_path):
    path = tmp_path / "log.jsonl"
    assert training_log(path) == []
    path.write_text('{"step": 2, "loss": 1.0, "score": 0.1}\n{"step": 4, "loss": 0.8}\n'
                    '{"step": 4, "loss": 0.7, "score": 0.3}\n{"step": 6, "lo')
    assert [(e["step"], e["loss"]) for e in training_log(path)] == [(2, 1.0), (4, 0.7)]


@pytest.fixture
def viewer_with_movie(make_napari_viewer, isolated_settings):
    config = SimulationConfig(size=(48, 48), density=0.3, photons=(1000.0, 5000.0),
                              background=(20.0, 200.0), camera=SCMOS, psf_sigma_px=1.2)
    frames = np.stack([f.adu for f in simulate_frames(100, config, seed=11, with_kde=False)])
    viewer = make_napari_viewer()
    viewer.add_image(frames, name="movie", metadata={"camera": SCMOS.to_dict(),
                                                     "psf_sigma_nm": 120.0})
    return viewer


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=20 * TIMEOUT_MS)


@pytest.mark.gui
def test_adapt_cancel_resume_and_use_the_models(viewer_with_movie, qtbot, tmp_path):
    viewer = viewer_with_movie
    widget = AdaptWidget(viewer)
    assert widget.folder.value.name == "movie_adapted"  # in-memory layer: working directory
    assert "measured on the stack first" in widget.setup.value
    out = tmp_path / "models"
    widget.folder.value = out
    widget.kde_steps.value = widget.denoiser_steps.value = widget.calibration_frames.value = 2
    assert widget.objective.value == "jaccard"
    widget.objective.value = "efficiency"

    widget.start()
    assert widget.worker is not None
    widget.stop()  # stops at the first progress report, after the inspection
    wait(qtbot, widget)
    assert "Cancelled" in widget.status.value and "resume" in widget.status.value
    assert not (out / "kde_cnn.safetensors").exists()
    assert not list(out.rglob("*.tmp*"))  # nothing half-written

    widget.start()
    wait(qtbot, widget)
    assert widget.status.value.startswith(f"Adapted models written to {out}"), (
        widget.status.value)
    _, kde_card = load_verified_state(out / "kde_cnn.safetensors")
    _, denoiser_card = load_verified_state(out / "denoiser.safetensors")
    setup = kde_card["adapted_to"]
    assert kde_card["adapt_objective"] == "efficiency"  # as chosen in the tab
    assert setup["psf_sigma_nm"] == 120.0 and setup["camera"]["sensitivity"] == SCMOS.sensitivity
    assert 1000 < setup["photons"] < 5000 and setup["density"] > 0  # measured on the movie
    assert json.loads((out / "adapt.json").read_text())["calibrated"] is True
    # the label-free check of both model pairs ran on the movie itself
    check = denoiser_card["calibration"]["label_free_check_on_stack"]
    assert {"generic", "adapted"} <= set(check) and check["adapted"]["localizations"] > 0
    # the loss curves were drawn from the logs of both runs
    widget.plot_logs(out)
    loss_axes = widget.figure.axes[0]
    assert [line.get_label() for line in loss_axes.lines] == ["KDE CNN", "denoiser"]
    assert len(loss_axes.lines[0].get_xdata()) == len(training_log(out / "kde-run/log.jsonl"))
    # each validation score on its own axes, the CNN's named by the chosen objective
    cnn_axes, denoiser_axes = widget.figure.axes[1:]
    assert "efficiency" in cnn_axes.get_ylabel() and "loss" in denoiser_axes.get_ylabel()
    assert len(denoiser_axes.lines[0].get_xdata()) == len(
        training_log(out / "denoiser-run/log.jsonl"))

    # the KDE CNN tab runs the adapted CNN
    kde = add_widget(viewer, "KDE CNN")
    kde.model_folder.value = out
    run_and_wait(qtbot, kde, frames="1-3", device="cpu")
    assert kde.status.value.startswith("Done: 3 frames"), kde.status.value
    assert viewer.layers[POINTS_NAME].metadata["model_sha256"] == kde_card["sha256"]
    # the Posterior tab asks for both adapted networks
    posterior = add_widget(viewer, "Diffusion posterior")
    posterior.model_folder.value = out
    posterior.frames.value = "1-2"
    request = posterior._make_request()
    assert (request.kde_weights, request.denoiser) == (str(out / "kde_cnn.safetensors"),
                                                       str(out / "denoiser.safetensors"))
    assert denoiser_card["kde_cnn_sha256"] == kde_card["sha256"]


@pytest.mark.gui
def test_a_folder_that_is_no_adaptation_is_a_one_line_error(viewer_with_movie, qtbot, tmp_path):
    kde = add_widget(viewer_with_movie, "KDE CNN")
    kde.model_folder.value = tmp_path
    count = notification_count()
    kde.start()
    assert kde.worker is None
    (error,) = errors_since(count)
    assert "lacks kde_cnn.safetensors" in error and "\n" not in error
