"""Dock widget "Uncertainty annotation": threshold a std map, draw regions, measure, export.

Most tests use a hand-made std map and localizations laid out exactly as the posterior widget
lays out its results (same helpers), so the statistics can be checked against numbers computed
by hand; one test runs the posterior widget first (shipped weights, CPU, tiny settings)."""

import napari
import numpy as np
import pandas as pd
import pytest

from napari_helpers import (
    PLUGIN,
    RAW,
    SHIPPED_DENOISER,
    add_widget,
    errors_since,
    notification_count,
    run_and_wait,
)
from napari_smlm_diffusion._napari.widgets.annotation_widget import (
    DRAWN_NAME,
    REGIONS_NAME,
    default_threshold,
)
from napari_smlm_diffusion._napari.widgets.outputs import fine_image, points_layer, show_layer
from napari_smlm_diffusion._napari.widgets.posterior_layers import (
    POINTS_NAME,
    STD_NAME,
    STD_ROLE,
    UNCERTAINTY,
)
from napari_smlm_diffusion.annotate import threshold_regions
from napari_smlm_diffusion.io import open_stack

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]

WIDGET = "Uncertainty annotation"
FINE = 25.0  # nm: 4x grid of the sample's 100 nm pixels
UM2 = (FINE / 1000) ** 2  # area of one fine pixel in um^2


def add_std_and_localizations(viewer):
    """A 'Posterior std' of stack frames 3-4 (indices 2, 3) and 'Localizations' over the raw
    layer: region A (6 px, frame index 2), region B (4 px, frame index 3), a 1-px speck."""
    raw = viewer.layers[RAW]
    std = np.zeros((2, 256, 256), np.float32)
    std[0, 10:12, 20:23] = [[0.6, 0.7, 0.8], [0.9, 1.0, 2.0]]
    std[1, 100:102, 50:52] = 0.8
    std[0, 200, 200] = 0.9
    show_layer(viewer, fine_image(raw, std, 4, 100.0, {"frames": "3-4"}, name=STD_NAME,
                                  role=STD_ROLE, first_frame=2))
    table = pd.DataFrame({
        "frame": [2, 2, 3, 5, 2],
        "y_nm": [10.5 * FINE, 11.2 * FINE, 100.5 * FINE, 100.5 * FINE, 50.0 * FINE],
        "x_nm": [20.5 * FINE, 22.9 * FINE, 50.5 * FINE, 50.5 * FINE, 50.0 * FINE],
        UNCERTAINTY: [10.0, 30.0, np.nan, 5.0, 7.0],
    })
    show_layer(viewer, points_layer(raw, table, 100.0, {}, name=POINTS_NAME,
                                    color_by=(UNCERTAINTY,)))
    return viewer.layers[STD_NAME], viewer.layers[POINTS_NAME]


def test_threshold_draw_measure_and_export(viewer, qtbot, tmp_path):
    std, _points = add_std_and_localizations(viewer)
    widget = add_widget(viewer, WIDGET)
    assert widget.std_layer.value is std and widget.points_layer.value.name == POINTS_NAME
    assert widget.threshold.max == pytest.approx(2.0)

    assert widget.min_area.value == 8  # half a camera pixel by default
    widget.min_area.value = 4
    widget.threshold.value = 0.5  # live preview: the regions follow the slider
    qtbot.waitUntil(lambda: viewer.layers[REGIONS_NAME].metadata["threshold"] == 0.5,
                    timeout=5000)
    regions = viewer.layers[REGIONS_NAME]
    np.testing.assert_array_equal(regions.data, threshold_regions(std.data, 0.5, 4))
    np.testing.assert_allclose(regions.scale, std.scale)
    np.testing.assert_allclose(regions.data_to_world((1, 100, 50)), std.data_to_world((1, 100, 50)))

    stats = widget.statistics  # hand-computed: speck (1 px) below the minimum area of 4 px
    assert list(stats["region"]) == [1, 2] and list(stats["frame"]) == [2, 3]
    np.testing.assert_allclose(stats["area_um2"], [6 * UM2, 4 * UM2])
    np.testing.assert_allclose(stats["mean_std"], [6.0 / 6, 0.8], rtol=1e-6)
    np.testing.assert_allclose(stats["max_std"], [2.0, 0.8], rtol=1e-6)
    assert list(stats["localizations"]) == [2, 1]  # frame index 5 is not a frame of the map
    np.testing.assert_allclose(stats["median_uncertainty_nm"], [20.0, np.nan])
    table = widget.table
    assert table.rowCount() == 2 and table.horizontalHeaderItem(3).text() == "Area µm²"
    assert [table.item(row, 2).text() for row in range(2)] == ["3", "4"]  # frames from 1

    # draw: a rectangle on frame index 1 of the map (pixel centres rows 200-203, cols 10-13),
    # and a line, which has no area
    shapes = widget.start_drawing()
    assert shapes.name == DRAWN_NAME and shapes.ndim == 3 and shapes.mode == "add_polygon"
    np.testing.assert_allclose(shapes.scale, std.scale)
    shapes.add_rectangles(np.array([[1, 199.5, 9.5], [1, 199.5, 13.5], [1, 203.5, 13.5],
                                    [1, 203.5, 9.5]]))
    shapes.add_lines(np.array([[1, 0.0, 0.0], [1, 30.0, 30.0]]))
    stats = widget.statistics
    assert list(stats["source"]) == ["threshold", "threshold", "drawn"]
    drawn = stats.iloc[2]
    assert drawn["frame"] == 3 and drawn["area_um2"] == pytest.approx(16 * UM2)
    assert drawn["mean_std"] == 0 and drawn["localizations"] == 0
    assert "line/path" in widget.status.value

    # brush edits of the regions count too
    regions.paint((1, 5, 5), 7, refresh=True)
    qtbot.waitUntil(lambda: 7 in set(widget.statistics["region"]), timeout=5000)
    regions.paint((1, 5, 5), 0, refresh=True)
    qtbot.waitUntil(lambda: 7 not in set(widget.statistics["region"]), timeout=5000)

    # choosing a row shows its frame and centres the view on it
    widget.table.selectRow(1)
    frame_axis = viewer.dims.ndim - 3
    assert viewer.dims.point[frame_axis] == pytest.approx(3.0)
    camera = getattr(viewer, "scene", viewer).camera
    np.testing.assert_allclose(camera.center[-2:], std.data_to_world((1, 100.5, 50.5))[1:])

    # exports: the table as CSV (frames from 1), the annotation image as TIFF with pixel size
    csv = widget.export_table(tmp_path / "regions.csv")
    back = pd.read_csv(csv)
    assert list(back["frame"]) == [3, 4, 4] and list(back["source"])[-1] == "drawn"
    np.testing.assert_allclose(back["area [um^2]"], [6 * UM2, 4 * UM2, 16 * UM2])
    tif = widget.export_labels(tmp_path / "regions.tif")
    with open_stack(tif) as stack:
        assert stack.pixel_size_nm == pytest.approx(FINE)
        labels = np.asarray(stack.data[:])
    assert labels.shape == (2, 256, 256) and set(np.unique(labels)) == {0, 1, 2, 3}
    assert (labels[1, 200:204, 10:14] == 3).all() and labels[1, 199, 10] == 0
    assert not list(tmp_path.glob(".*.tmp"))

    # a new threshold replaces the regions in place; the drawn region stays
    widget.threshold.value = 1.5
    widget.update_regions()
    assert viewer.layers[REGIONS_NAME] is regions and regions.data.max() == 0
    assert list(widget.statistics["source"]) == ["drawn"]
    assert [layer.name for layer in viewer.layers].count(REGIONS_NAME) == 1


def test_errors_are_one_line_notifications(viewer, tmp_path):
    widget = add_widget(viewer, WIDGET)
    before = notification_count()
    assert widget.std_layer.value.name == RAW  # no std map yet: the raw stack is offered
    assert REGIONS_NAME not in viewer.layers  # ... but not thresholded before the user asks
    assert "not a posterior std map" in widget.status.value
    add_std_and_localizations(viewer)
    assert widget.std_layer.value.name == STD_NAME  # ... and replaced as soon as there is one
    widget.update_regions()
    assert widget.export_table(tmp_path / "missing" / "regions.csv") is None
    errors = errors_since(before)
    assert len(errors) == 1 and "could not write" in errors[0] and "\n" not in errors[0]
    viewer.layers.remove(STD_NAME)
    viewer.layers.remove(RAW)
    widget.update_regions()
    assert "choose a std map" in errors_since(before)[-1]


def test_annotates_the_posterior_of_the_sample_end_to_end(viewer, qtbot, tmp_path):
    annotation = add_widget(viewer, WIDGET)  # opened first: it follows the posterior's layers
    posterior = add_widget(viewer, "Diffusion posterior")
    run_and_wait(qtbot, posterior, frames="1-2", samples=2, steps=2, keep=0, device="cpu",
                 weights=SHIPPED_DENOISER)
    assert posterior.status.value.startswith("Done"), posterior.status.value
    std, points = viewer.layers[STD_NAME], viewer.layers[POINTS_NAME]
    assert annotation.std_layer.value is std and annotation.points_layer.value is points

    annotation.threshold.value = float(np.percentile(std.data, 98))
    annotation.update_regions()
    regions = viewer.layers[REGIONS_NAME]
    np.testing.assert_allclose(regions.data_to_world((0, 0, 0)), std.data_to_world((0, 0, 0)))
    np.testing.assert_allclose(regions.scale, std.scale)
    stats = annotation.statistics
    labelled = regions.data > 0
    assert len(stats) == len(np.unique(regions.data[labelled])) > 0
    assert stats["area_um2"].sum() == pytest.approx(labelled.sum() * UM2)
    assert set(stats["frame"]) <= {0, 1}
    assert 0 <= stats["localizations"].sum() <= len(points.data)
    assert (stats["max_std"] >= stats["mean_std"]).all()
    assert (stats["mean_std"] > annotation.threshold.value - 1e-6).all()
    tif = annotation.export_labels(tmp_path / "posterior_regions.tif")
    with open_stack(tif) as stack:
        assert stack.pixel_size_nm == pytest.approx(FINE)
        np.testing.assert_array_equal(stack.data[:], regions.data)

    # File > Save Selected Layers: the plugin's writers keep the 4x grid's pixel size
    for layer in (std, regions, viewer.layers["Posterior mean"]):
        path = tmp_path / f"saved {layer.name}.tif"
        assert napari.save_layers(str(path), [layer], plugin=PLUGIN) == [str(path)]
        with open_stack(path) as stack:
            assert stack.pixel_size_nm == pytest.approx(FINE)
            np.testing.assert_allclose(stack.data[:], layer.data)
    path = tmp_path / "saved localizations.csv"
    assert napari.save_layers(str(path), [points], plugin=PLUGIN) == [str(path)]
    header = path.read_text().splitlines()[0]
    assert '"uncertainty [nm]"' in header and '"detection probability"' in header


def test_default_threshold_looks_above_the_floor_of_a_calibrated_std_map():
    floor = np.full((64, 64), 0.17, np.float32)  # calibrated map: a floor everywhere,
    floor[40:, :] += 1e-5  # with rounding-level variations
    floor[10:14, 10:14] = np.linspace(0.2, 0.5, 16).reshape(4, 4)  # one uncertain molecule
    assert default_threshold(floor.ravel()) == pytest.approx(np.percentile(floor[10:14, 10:14], 99))
    flat = np.zeros(100)  # nothing above the minimum: the percentile of the whole map
    assert default_threshold(flat) == 0.0
