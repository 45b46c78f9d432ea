"""Dock widget "Diffusion posterior": end to end on the sample data with the shipped weights (CPU,
few frames, samples and steps). Checks structure and alignment, never the denoiser's quality."""

import threading

import numpy as np
import pytest

from napari_helpers import (
    RAW,
    SHIPPED_DENOISER,
    add_widget,
    errors_since,
    event_gaps_during,
    first_outcome,
    notices_since,
    notification_count,
    run_and_wait,
    run_reacting,
)
from napari_smlm_diffusion._napari.layers import points_from_table
from napari_smlm_diffusion._napari.widgets.jobs import Failed, Progress
from napari_smlm_diffusion._napari.widgets.posterior_job import PosteriorRequest, posterior_job
from napari_smlm_diffusion._napari.widgets.posterior_layers import (
    ALL_NAMES,
    MEAN_NAME,
    POINTS_NAME,
    SAMPLES_NAME,
    STD_NAME,
    SUM_MEAN_NAME,
    SUM_STD_NAME,
)
from napari_smlm_diffusion._napari.writer import (
    table_from_points,
    write_image_tiff,
    write_points_csv,
)
from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.io import open_stack, read_localizations
from napari_smlm_diffusion.posterior import PosteriorEngine, PosteriorSettings, iter_posterior
from napari_smlm_diffusion.pretrained import read_model_card, resolve_weights
from napari_smlm_diffusion.weights import DENOISER_NAME

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]

WIDGET = "Diffusion posterior"
QUICK = {"samples": 3, "steps": 3, "keep": 2, "device": "cpu"}


@pytest.fixture
def denoiser():
    """The shipped denoiser's file (the widget's field takes a path)."""
    return SHIPPED_DENOISER


def open_widget(viewer, denoiser):
    widget = add_widget(viewer, WIDGET)
    widget.weights.value = denoiser
    return widget


def output_names(viewer):
    return [layer.name for layer in viewer.layers if layer.name in ALL_NAMES]


def expected_posterior(raw, frames, settings, denoiser):
    """The core's posterior of the same frames (what the widget must show)."""
    engine = PosteriorEngine.load(denoiser_weights=str(denoiser), device="cpu",
                                  notify=lambda _text: None)
    return list(iter_posterior(raw.data, preset("sCMOS"), engine, frames, settings, 120.0))


def test_posterior_widget_end_to_end_aligned_and_replaced_in_place(viewer, qtbot, denoiser,
                                                                   tmp_path):
    widget = open_widget(viewer, denoiser)
    raw = viewer.layers[RAW]
    assert widget.layer.value.name == RAW and widget.frames.value == "1-10"  # CPU: first 10
    assert widget.device.choices[0] == "auto" and widget.sampler.value == "dpm-solver"
    assert set(widget.sampler.choices) == {"dpm-solver", "ddim", "ddpm"}

    before = notification_count()
    run_and_wait(qtbot, widget, frames="2-3", **QUICK)
    assert widget.status.value.startswith("Done: 2 frames x 3 samples"), widget.status.value
    status = read_model_card(resolve_weights(DENOISER_NAME)[1]).get("status")
    if status:  # weights still being trained: the user is told when they load
        assert any("denoiser weights" in text and status[:40] in text
                   for text in notices_since(before))
    assert not errors_since(before)
    mean, std, samples, points, sum_mean, sum_std = (
        viewer.layers[name] for name in (MEAN_NAME, STD_NAME, SAMPLES_NAME, POINTS_NAME,
                                         SUM_MEAN_NAME, SUM_STD_NAME))
    assert mean.data.shape == std.data.shape == (2, 256, 256)
    assert samples.data.shape == (2, 2, 256, 256)  # (sample, frame, rows, cols): own slider
    assert samples.axis_labels[0] == "sample" and not samples.visible

    # the 4x layers lie over the raw pixels: fine pixel (4r + 1.5, 4c + 1.5) of the first
    # processed frame (raw frame index 1) is the centre of raw pixel (r, c)
    r, c = 10, 37
    raw_centre = np.asarray(raw.data_to_world((1, r, c)))
    fine = (4 * r + 1.5, 4 * c + 1.5)
    for layer in (mean, std):
        np.testing.assert_allclose(layer.data_to_world((0, *fine)), raw_centre)
        np.testing.assert_allclose(layer.scale[-2:], np.asarray(raw.scale[-2:]) / 4)
        corner = np.asarray(layer.data_to_world((0, -0.5, -0.5)))  # top-left of fine pixel 0
        np.testing.assert_allclose(corner, np.asarray(raw.data_to_world((1, -0.5, -0.5))))
    np.testing.assert_allclose(samples.data_to_world((1, 0, *fine))[1:], raw_centre)
    assert mean.metadata["frames"] == "2-3" and std.metadata["pixel_size_nm"] == 25.0

    # maps and points are the core's, placed by points_from_table on the raw layer
    settings = PosteriorSettings(samples=3, steps=3, sampler="dpm-solver", seed=0,
                                 keep_samples=2)
    batches = expected_posterior(raw, range(1, 3), settings, denoiser)
    table = np.concatenate([b.localizations.to_numpy(dtype=float) for b in batches])
    columns = list(batches[0].localizations.columns)
    np.testing.assert_allclose(mean.data, [b.frames[0].mean for b in batches], atol=1e-5)
    np.testing.assert_allclose(std.data ** 2, [b.frames[0].reported_variance for b in batches],
                               atol=1e-5)
    # the summed image and its calibrated std, as the CLI's sum_mean.tif and sum_std.tif
    np.testing.assert_allclose(sum_mean.data, sum(b.frames[0].mean for b in batches), atol=1e-4)
    np.testing.assert_allclose(sum_std.data ** 2, sum(b.frames[0].reported_variance
                                                      for b in batches), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sum_mean.data_to_world(fine), raw_centre[1:])
    assert sum_mean.metadata["pixel_size_nm"] == 25.0
    assert len(points.data) == len(table) > 0
    frame_table = points.features
    for name in ("uncertainty_nm", "uncertainty_x_nm", "detection_probability", "photons"):
        np.testing.assert_allclose(frame_table[name], table[:, columns.index(name)],
                                   rtol=1e-5, atol=1e-6)
    coords, _ = points_from_table(frame_table, raw.scale, raw.translate)
    np.testing.assert_allclose(points.data, coords)

    # every point sits on a peak of the posterior mean, in world coordinates: within half a
    # fine pixel of a pixel that is the maximum of its 3 x 3 neighbourhood
    padded = np.pad(mean.data, ((0, 0), (1, 1), (1, 1)))
    for position in points.data:
        f, row, col = mean.world_to_data(position)
        f = int(round(f))
        on_peak = [
            abs(row - r) <= 0.5 + 1e-6 and abs(col - c) <= 0.5 + 1e-6
            and padded[f, r + 1, c + 1] == padded[f, r:r + 3, c:c + 3].max() > 0
            for r in (int(np.floor(row)), int(np.ceil(row)))
            for c in (int(np.floor(col)), int(np.ceil(col)))]
        assert any(on_peak), position

    # colour by uncertainty; molecules of undetermined uncertainty are hollow
    unknown = ~np.isfinite(frame_table["uncertainty_nm"].to_numpy())
    assert (points.face_color[~unknown, 3] > 0).all() and (points.face_color[unknown, 3] == 0).all()
    assert points.size[0] == pytest.approx(60.0)  # 0.6 camera pixels in nm

    # writers: localizations as ThunderSTORM CSV with the posterior columns, maps as TIFF
    data, attributes, _ = points.as_layer_data_tuple()
    write_points_csv(str(tmp_path / "locs.csv"), data, attributes)
    written = read_localizations(tmp_path / "locs.csv")
    np.testing.assert_allclose(written["detection_probability"],
                               frame_table["detection_probability"])
    np.testing.assert_array_equal(written["frame"], frame_table["frame"])
    header = (tmp_path / "locs.csv").read_text().splitlines()[0]
    assert '"uncertainty [nm]"' in header and '"detection probability"' in header
    np.testing.assert_allclose(table_from_points(data, attributes)["x_nm"], frame_table["x_nm"])
    for layer in (std, samples):
        data, attributes, _ = layer.as_layer_data_tuple()
        write_image_tiff(str(tmp_path / f"{layer.name}.tif"), data, attributes)
        with open_stack(tmp_path / f"{layer.name}.tif") as stack:
            assert stack.pixel_size_nm == pytest.approx(25.0)
            assert stack.data.shape == (int(np.prod(data.shape[:-2])), 256, 256)

    # running again replaces the layers in place; samples go when none are kept
    count = len(viewer.layers)
    run_and_wait(qtbot, widget, frames="1-2", keep=0)
    assert widget.status.value.startswith("Done: 2 frames"), widget.status.value
    assert output_names(viewer) == [SUM_STD_NAME, SUM_MEAN_NAME, STD_NAME, MEAN_NAME,
                                    POINTS_NAME]
    assert len(viewer.layers) == count - 1
    assert viewer.layers[MEAN_NAME] is mean and viewer.layers[POINTS_NAME] is points
    assert mean.metadata["frames"] == "1-2"
    np.testing.assert_allclose(mean.data_to_world((0, *fine)), raw.data_to_world((0, r, c)))
    run_and_wait(qtbot, widget, keep=1)
    assert output_names(viewer) == [SUM_STD_NAME, SUM_MEAN_NAME, SAMPLES_NAME, STD_NAME,
                                    MEAN_NAME, POINTS_NAME]


def test_cancel_stops_within_one_frame_and_changes_no_layer(viewer, qtbot, denoiser):
    widget = open_widget(viewer, denoiser)
    run_and_wait(qtbot, widget, frames="5", samples=2, steps=2, keep=0, device="cpu")
    mean = viewer.layers[MEAN_NAME]
    shown = mean.data.copy()
    seen = []

    def cancel_on_first_frame(message):
        if isinstance(message, Progress) and message.done:
            seen.append(message.done)
            widget.stop()

    widget.frames.value = "1-20"
    run_reacting(qtbot, widget, cancel_on_first_frame)
    assert seen and max(seen) <= 2  # stopped within one frame
    assert widget.status.value.startswith("Cancelled after"), widget.status.value
    assert output_names(viewer) == [SUM_STD_NAME, SUM_MEAN_NAME, STD_NAME, MEAN_NAME, POINTS_NAME]
    assert viewer.layers[MEAN_NAME] is mean and mean.metadata["frames"] == "5-5"
    np.testing.assert_array_equal(mean.data, shown)
    assert widget.run.enabled and not widget.cancel.enabled


BAD_INPUT = [
    ({"frames": "95-120"}, "lie outside the stack: it has frames 1-100"),
    ({"frames": "0-2"}, "lie outside the stack"),
    ({"frames": "abc"}, "expected A-B"),
    ({"frames": "1-2", "samples": 2, "keep": 3}, "'Samples to keep' (3) cannot exceed"),
    ({"frames": "1-2", "weights": "/nonexistent/denoiser.safetensors"}, "not found"),
]


def test_bad_input_is_one_line_notification_and_no_layer(viewer, qtbot, denoiser):
    widget = open_widget(viewer, denoiser)
    with pytest.raises(ValueError, match="outside of the allowed range"):
        widget.samples.value = 0  # samples <= 0 cannot even be entered
    for values, expected in BAD_INPUT:
        widget.weights.value, widget.samples.value, widget.keep.value = denoiser, 2, 0
        before = notification_count()
        run_and_wait(qtbot, widget, **values)
        errors = errors_since(before)
        assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors
        assert errors[0].startswith(f"{WIDGET}: ") and "Traceback" not in errors[0]
        assert output_names(viewer) == [] and widget.run.enabled and widget.worker is None


def test_removed_layer_adds_no_layer(viewer, qtbot, denoiser):
    widget = open_widget(viewer, denoiser)
    for name, value in {**QUICK, "frames": "1-10", "keep": 0}.items():
        getattr(widget, name).value = value
    before = notification_count()
    run_reacting(qtbot, widget,
                 lambda message: RAW in viewer.layers and viewer.layers.remove(RAW))
    assert "was removed while the job ran" in errors_since(before)[-1]
    assert output_names(viewer) == []


def test_job_reports_a_missing_device_instead_of_raising():
    request = PosteriorRequest(np.zeros((2, 16, 16), np.uint16), range(2), preset("sCMOS"),
                               120.0, DENOISER_NAME, "cuda:7", PosteriorSettings(2, 2))
    outcome = first_outcome(posterior_job(request, threading.Event()))
    assert isinstance(outcome, Failed) and "not available" in outcome.message


def test_single_frame_layer_gives_2d_maps_then_3d_ones_replace_them(viewer, qtbot, denoiser):
    raw = viewer.layers[RAW]
    single = viewer.add_image(np.asarray(raw.data[5]), name="one frame", scale=(100.0, 100.0),
                              translate=(300.0, -200.0))
    widget = open_widget(viewer, denoiser)
    widget.layer.value = single
    assert widget.frames.value == "1-1"
    run_and_wait(qtbot, widget, samples=2, steps=2, keep=2, device="cpu")
    assert widget.status.value.startswith("Done: 1 frame x 2 samples"), widget.status.value
    mean, samples, points = (viewer.layers[name] for name in (MEAN_NAME, SAMPLES_NAME,
                                                              POINTS_NAME))
    assert mean.data.shape == (256, 256) and samples.data.shape == (2, 256, 256)
    assert points.data.shape[1] == 2
    r, c = 40, 3
    np.testing.assert_allclose(mean.data_to_world((4 * r + 1.5, 4 * c + 1.5)),
                               single.data_to_world((r, c)))
    coords, _ = points_from_table(points.features, single.scale, single.translate,
                                  with_frames=False)
    np.testing.assert_allclose(points.data, coords)

    widget.layer.value = raw
    run_and_wait(qtbot, widget, frames="6", keep=0)
    assert output_names(viewer) == [SUM_STD_NAME, SUM_MEAN_NAME, STD_NAME, MEAN_NAME, POINTS_NAME]
    assert viewer.layers[MEAN_NAME].data.shape == (1, 256, 256)
    assert viewer.layers[POINTS_NAME].data.shape[1] == 3


def test_gui_processes_events_while_the_posterior_runs(viewer, qtbot, denoiser):
    widget = open_widget(viewer, denoiser)
    # napari creates a new image layer in the GUI thread (~0.4 s each here): the first run adds
    # five, so the job is measured on a re-run, which replaces the layers' data in place
    run_and_wait(qtbot, widget, frames="1", samples=2, steps=2, keep=0, device="cpu")
    during, elapsed = event_gaps_during(qtbot, widget, frames="1-3", samples=2, steps=3, keep=0,
                                        device="cpu")
    assert widget.status.value.startswith("Done: 3 frames"), widget.status.value
    assert len(during) >= 5 and during.max() < max(1.0, elapsed / 3), (len(during), elapsed)
