"""Dock widgets: Camera & PSF, KDE CNN (napari viewer + qtbot, small untrained model on CPU)."""

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from card_helpers import kde_card
from napari_helpers import (
    RAW,
    add_widget,
    errors_since,
    event_gaps_during,
    first_outcome,
    notification_count,
    run_and_wait,
    run_reacting,
)
from napari_smlm_diffusion._napari.layers import points_from_table
from napari_smlm_diffusion._napari.widgets import settings as settings_module
from napari_smlm_diffusion._napari.widgets.kde_job import Failed, KdeRequest, Progress, kde_job
from napari_smlm_diffusion._napari.widgets.kde_layers import (
    KDE_NAME,
    POINTS_NAME,
    SUM_NAME,
    points_layer,
)
from napari_smlm_diffusion._napari.widgets.layer_camera import CAMERA_KEY
from napari_smlm_diffusion._napari.writer import table_from_points
from napari_smlm_diffusion.camera import PRESETS, preset
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.pretrained import load_kde_cnn, save_weights

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]

OUTPUTS = (KDE_NAME, SUM_NAME, POINTS_NAME)


@pytest.fixture
def peaky_weights(untrained_weights, tmp_path):
    """The untrained model with a detection threshold at which it finds a few peaks per frame
    of the sample data (the conftest threshold finds none), so localizations can be checked."""
    from napari_smlm_diffusion._napari.sample_data import make_sample_data

    model, card = load_kde_cnn(untrained_weights)
    stack = make_sample_data()[0][0][:3]
    kdes = KdeEngine(model, card, torch.device("cpu")).predict(stack, preset("sCMOS"))
    path = tmp_path / "peaky.safetensors"
    save_weights(model, path, kde_card(card.architecture, float(np.quantile(kdes, 0.9995))))
    return path


def output_names(viewer):
    return [layer.name for layer in viewer.layers if layer.name in OUTPUTS]


def layer_values(layer):
    return layer.metadata[CAMERA_KEY]["values"]


def test_camera_is_per_layer_from_file_metadata_and_saved_only_on_request(viewer):
    settings = settings_module.get_settings()
    emccd = PRESETS["EMCCD"].to_dict() | {"psf_sigma_nm": 200.0}
    settings.apply(emccd, "test")  # defaults: something else than the sample's camera
    widget = add_widget(viewer, "Camera & PSF")
    raw = viewer.layers[RAW]

    sample = raw.metadata["camera"]
    for key, value in sample.items():  # the file's camera is applied to its layer...
        assert widget.fields[key].value == pytest.approx(value)
        assert layer_values(raw)[key] == pytest.approx(value)
    assert widget.fields["psf_sigma_nm"].value == pytest.approx(120.0)
    assert "from file metadata" in widget.source.value and widget.preset.value == "sCMOS"
    assert settings.values() == pytest.approx(emccd)  # ...not to the defaults

    widget.fields["sensitivity"].value = 0.0  # invalid: said inline, the field goes back
    assert "sensitivity" in widget.message.value and "expected > 0" in widget.message.value
    assert "kept the previous value" in widget.message.value
    assert layer_values(raw)["sensitivity"] == pytest.approx(0.46)
    assert widget.fields["sensitivity"].value == pytest.approx(0.46)
    widget.fields["pixel_size"].value = 107.0  # typed: kept by the layer
    assert layer_values(raw)["pixel_size"] == 107.0 and "typed" in widget.source.value

    viewer.add_image(np.zeros((3, 16, 16), np.uint16), name="other")  # no camera metadata
    widget.layer.value = viewer.layers["other"]
    assert widget.fields["em_gain"].value == 100 and "defaults" in widget.source.value
    widget.layer.value = raw  # choosing a layer never overwrites its typed values
    assert widget.fields["pixel_size"].value == 107.0
    kde = add_widget(viewer, "KDE CNN")  # opening a widget neither
    assert "pixel 107 nm" in kde.camera.value and layer_values(raw)["pixel_size"] == 107.0
    second = add_widget(viewer, "Camera & PSF")
    assert second.fields["pixel_size"].value == 107.0
    assert kde._camera()[0].pixel_size == 107.0  # what a run uses
    assert not settings_module.config_path().exists()  # nothing saved unasked

    widget.preset.value = "EMCCD"  # camera fields change, pixel size and PSF stay
    assert layer_values(raw)["em_gain"] == 100 and layer_values(raw)["pixel_size"] == 107.0
    assert second.fields["em_gain"].value == 100 and "EMCCD" in kde.camera.value

    widget.save_as_default()
    saved = json.loads(settings_module.config_path().read_text())
    assert saved["em_gain"] == 100 and saved["pixel_size"] == 107.0
    settings_module.reset_settings()
    assert settings_module.get_settings().values() == saved  # next session starts from here

    widget.fill_from_layer()  # "From file metadata": the file's camera again
    assert layer_values(raw)["pixel_size"] == 100.0 and layer_values(raw)["em_gain"] == 1.0
    assert "from file metadata" in widget.source.value and "pixel 100 nm" in kde.camera.value


def test_camera_widget_estimates_baseline_only_from_dark_pixels(viewer):
    widget = add_widget(viewer, "Camera & PSF")
    widget.estimate_baseline()  # sample data: background everywhere, no dark pixel
    assert "not changed" in widget.message.value
    assert layer_values(viewer.layers[RAW])["baseline"] == 100

    rng = np.random.default_rng(1)
    dark = 400 + rng.normal(0, 1.6 / 0.46, (20, 32, 32))  # dark frames of the sCMOS camera
    viewer.add_image(dark.round().astype(np.uint16), name="dark frames")
    widget.layer.value = viewer.layers["dark frames"]
    widget.estimate_baseline()
    assert layer_values(viewer.layers["dark frames"])["baseline"] == pytest.approx(400, abs=0.5)
    assert layer_values(viewer.layers[RAW])["baseline"] == 100
    assert "receive no light" in widget.message.value


def test_kde_widget_runs_aligned_layers_and_replaces_them(viewer, qtbot, peaky_weights):
    widget = add_widget(viewer, "KDE CNN")
    raw = viewer.layers[RAW]
    assert widget.layer.value.name == RAW and widget.frames.value == "1-100"
    assert widget.device.choices[0] == "auto"

    run_and_wait(qtbot, widget, frames="2-4", device="cpu", weights=peaky_weights,
                 keep_kdes=True, batch_size=2)
    assert widget.status.value.startswith("Done: 3 frames"), widget.status.value
    kde, total, points = (viewer.layers[name] for name in OUTPUTS)

    # the 4x layers lie over the raw pixels: fine pixel (4r + 1.5, 4c + 1.5) is raw pixel centre
    r, c = 10, 37
    raw_centre = np.asarray(raw.data_to_world((3, r, c)))
    fine = (4 * r + 1.5, 4 * c + 1.5)
    np.testing.assert_allclose(kde.data_to_world((3 - 1, *fine)), raw_centre)
    np.testing.assert_allclose(total.data_to_world(fine), raw_centre[1:])
    assert kde.data.shape == (3, 256, 256) and total.data.shape == (256, 256)

    # the points are the pipeline's table, placed by points_from_table on the raw layer
    camera = preset("sCMOS")
    expected = run_kde(raw.data, camera, KdeEngine.load(str(peaky_weights), "cpu"),
                       frames=range(1, 4), batch_size=2, psf_sigma_nm=120.0)
    assert 0 < len(expected.localizations) == len(points.data)
    coords, _ = points_from_table(expected.localizations, raw.scale, raw.translate)
    np.testing.assert_allclose(points.data, coords)
    np.testing.assert_allclose(points.features["photons"], expected.localizations["photons"],
                               rtol=1e-5)
    np.testing.assert_allclose(total.data, expected.sum_image, rtol=1e-5, atol=1e-6)
    assert points.metadata["raw_scale"] == tuple(raw.scale)
    assert points.metadata["raw_translate"] == tuple(raw.translate)
    assert points.metadata["pixel_size_nm"] == 100.0
    data, attributes, _ = points.as_layer_data_tuple()  # what the CSV writer receives
    written = table_from_points(data, attributes)
    np.testing.assert_allclose(written["x_nm"], expected.localizations["x_nm"], atol=1e-6)
    np.testing.assert_array_equal(written["frame"], expected.localizations["frame"])

    count = len(viewer.layers)
    run_and_wait(qtbot, widget)  # same again: the same layers get the new data
    assert len(viewer.layers) == count and output_names(viewer) == list(OUTPUTS)  # main on top
    assert viewer.layers[SUM_NAME] is total and viewer.layers[POINTS_NAME] is points
    run_and_wait(qtbot, widget, keep_kdes=False, frames="1-2")  # stale per-frame KDEs go
    assert output_names(viewer) == [SUM_NAME, POINTS_NAME]  # main results on top
    assert total.metadata["frames"] == "1-2"


def test_cancel_leaves_no_result_layer(viewer, qtbot, untrained_weights):
    widget = add_widget(viewer, "KDE CNN")
    widget.device.value, widget.weights.value, widget.batch_size.value = (
        "cpu", untrained_weights, 1)
    seen = []

    def cancel_on_first_batch(message):
        if isinstance(message, Progress) and message.done:
            seen.append(message.done)
            widget.stop()

    run_reacting(qtbot, widget, cancel_on_first_batch)
    assert seen and max(seen) <= 2  # stopped within one batch
    assert widget.status.value.startswith("Cancelled after")
    assert output_names(viewer) == [] and widget.run.enabled and not widget.cancel.enabled


BAD_INPUT = [
    ({"frames": "95-120"}, "lie outside the stack: it has frames 1-100"),
    ({"frames": "abc"}, "expected A-B"),
    ({"frames": "1-3", "weights": "/nonexistent/model.safetensors"}, "not found"),
]


def test_bad_input_is_a_one_line_notification(viewer, qtbot, untrained_weights):
    widget = add_widget(viewer, "KDE CNN")
    for values, expected in BAD_INPUT:
        widget.weights.value = untrained_weights
        before = notification_count()
        run_and_wait(qtbot, widget, **values)
        errors = errors_since(before)
        assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors
        assert "Traceback" not in errors[0] and output_names(viewer) == []
        assert widget.run.enabled and widget.worker is None


def test_removed_layer_stops_the_job(viewer, qtbot, untrained_weights):
    widget = add_widget(viewer, "KDE CNN")
    widget.weights.value, widget.device.value, widget.batch_size.value = (
        untrained_weights, "cpu", 1)
    before = notification_count()
    run_reacting(qtbot, widget,
                 lambda message: RAW in viewer.layers and viewer.layers.remove(RAW))
    assert "was removed while the job ran" in errors_since(before)[-1]
    assert output_names(viewer) == []


def test_gui_processes_events_while_the_job_runs(viewer, qtbot, untrained_weights):
    widget = add_widget(viewer, "KDE CNN")
    during, elapsed = event_gaps_during(qtbot, widget, device="cpu", weights=untrained_weights,
                                        batch_size=4, frames="1-60")
    assert widget.status.value.startswith("Done: 60 frames")
    assert len(during) >= 5 and during.max() < max(1.0, elapsed / 3), (len(during), elapsed)


def test_job_reports_a_missing_device_instead_of_raising(untrained_weights):
    request = KdeRequest(np.zeros((2, 8, 8), np.uint16), range(2), preset("sCMOS"), 120.0,
                         str(untrained_weights), "cuda:7", 1, False)
    outcome = first_outcome(kde_job(request, threading.Event()))
    assert isinstance(outcome, Failed) and "not available" in outcome.message


def test_points_align_when_the_raw_layer_is_in_pixels():
    """A TIFF without pixel size opens with scale 1 (pixels): points still land on the pixels
    and the CSV writer still gets nm."""
    import pandas as pd

    raw = SimpleNamespace(scale=np.array([1.0, 1.0, 1.0]), translate=np.array([0.0, 2.0, 3.0]),
                          ndim=3, name="raw", units=None)
    table = pd.DataFrame({"frame": [4], "x_nm": [150.0], "y_nm": [250.0], "photons": [900.0]})
    data, attributes, kind = points_layer(raw, table, 100.0, {})
    world = data * np.asarray(attributes["scale"])
    np.testing.assert_allclose(world, [[4.0, 2.0 + 2.0, 3.0 + 1.0]])  # centres of pixel (2, 1)
    written = table_from_points(data, attributes)
    np.testing.assert_allclose(written[["frame", "x_nm", "y_nm"]].to_numpy(), [[4, 150, 250]])


def test_removing_the_input_layer_leaves_no_stale_description(viewer):
    widget = add_widget(viewer, "KDE CNN")
    assert widget.stack_info.value == "100 frames of 64 x 64 px" and widget.frames.value == "1-100"
    assert "pixel 100 nm" in widget.camera.value
    viewer.layers.remove(RAW)
    assert widget.layer.value is None
    assert widget.stack_info.value.startswith("Open an SMLM stack")
    assert widget.frames.value == "" and "No image layer" not in widget.camera.value
    viewer.add_image(np.zeros((7, 20, 24), np.uint16), name="next")
    assert widget.stack_info.value == "7 frames of 20 x 24 px" and widget.frames.value == "1-7"


def test_kde_widget_threshold_field(viewer, qtbot, peaky_weights):
    """0 uses the model card's threshold (said in the status line); a value of the user's gives
    the pipeline's table at that threshold."""
    widget = add_widget(viewer, "KDE CNN")
    raw = viewer.layers[RAW]
    run_and_wait(qtbot, widget, frames="1-3", device="cpu", weights=peaky_weights)
    card_threshold = KdeEngine.load(str(peaky_weights), "cpu").card.detection_threshold
    assert f"threshold {card_threshold:.3g}, model card" in widget.status.value
    by_card = len(viewer.layers[POINTS_NAME].data)

    run_and_wait(qtbot, widget, threshold=round(card_threshold / 2, 2))
    assert "yours" in widget.status.value
    engine = KdeEngine.load(str(peaky_weights), "cpu")
    engine.threshold = round(card_threshold / 2, 2)
    expected = run_kde(raw.data, preset("sCMOS"), engine, frames=range(0, 3),
                       psf_sigma_nm=120.0)
    assert len(viewer.layers[POINTS_NAME].data) == len(expected.localizations) > by_card


@pytest.mark.parametrize("network", ["kde_cnn_fast", "kde_cnn_v1"])
def test_kde_widget_runs_the_chosen_shipped_network(viewer, qtbot, network):
    widget = add_widget(viewer, "KDE CNN")
    raw = viewer.layers[RAW]
    run_and_wait(qtbot, widget, frames="1-2", device="cpu", network=network)
    points = viewer.layers[POINTS_NAME]
    engine = KdeEngine.load(network, "cpu")
    assert points.metadata["model"] == network and f"with {network}," in widget.status.value
    assert points.metadata["model_sha256"] == engine.card.sha256
    expected = run_kde(raw.data, preset("sCMOS"), engine, frames=range(0, 2),
                       psf_sigma_nm=120.0)
    assert len(points.data) == len(expected.localizations) > 0
