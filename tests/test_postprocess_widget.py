"""Dock widget "Post-processing": drift, merge, render and FRC of a Points layer, in a worker."""

import numpy as np
import pytest

from napari_smlm_diffusion._napari.layers import points_from_table
from napari_smlm_diffusion._napari.widgets.postprocess_widget import PostprocessWidget
from napari_smlm_diffusion.postprocess import synthetic

pytestmark = pytest.mark.gui

PIXEL = 100.0
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def drifting():
    rng = np.random.default_rng(31)
    sites = synthetic.structure_sites(4000.0, rng, "rings")
    true = synthetic.smooth_drift(600, 200.0, rng)
    table = synthetic.sample_sites(sites, 600, 30, (10.0, 20.0), rng, true + 300.0)
    return table, true


@pytest.fixture
def widget(make_napari_viewer, drifting, qtbot):
    viewer = make_napari_viewer()
    table, _ = drifting
    scale, translate = (1.0, PIXEL, PIXEL), (0.0, 0.0, 0.0)
    coords, features = points_from_table(table, scale, translate)
    viewer.add_points(coords, features=features, name="locs", size=30.0,
                      metadata={"raw_scale": scale, "raw_translate": translate,
                                "pixel_size_nm": PIXEL})
    widget = PostprocessWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer.value.name == "locs"
    return viewer, widget


def run(qtbot, widget, what):
    widget.start(what)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_drift_adds_corrected_points_and_a_plot(qtbot, widget, drifting):
    viewer, w = widget
    table, true = drifting
    w.window.value = 30
    run(qtbot, w, "drift")
    assert "20 windows" in w.status.value
    layer = viewer.layers["locs drift-corrected"]
    corrected = layer.features
    applied = table[["x_nm", "y_nm"]].to_numpy() - corrected[["x_nm", "y_nm"]].to_numpy()
    error = applied - true[table["frame"]]
    error -= error.mean(axis=0)
    assert np.sqrt(np.mean(np.sum(error**2, axis=1))) <= 5.0
    # the points sit where the corrected table says (raw geometry: nm - pixel/2)
    assert np.allclose(layer.data[:, 2], corrected["x_nm"] - PIXEL / 2)
    assert np.allclose(layer.data[:, 0], corrected["frame"])
    assert len(w.figure.axes) == 1 and len(w.figure.axes[0].lines) == 4
    run(qtbot, w, "drift")  # a re-run replaces the layer in place
    assert [layer.name for layer in viewer.layers].count("locs drift-corrected") == 1


def test_merge_render_and_frc(qtbot, widget, drifting):
    viewer, w = widget
    table, _ = drifting
    w.radius.value, w.gap.value = 30.0, 0
    run(qtbot, w, "merge")
    merged = viewer.layers["locs merged"].features
    assert 0 < len(merged) < len(table)
    assert merged["frames_on"].sum() == len(table)
    w.pixel.value, w.blur.value = 20.0, "histogram"
    run(qtbot, w, "render")
    image = viewer.layers["locs rendered"]
    assert image.data.sum() == pytest.approx(len(table))
    # image pixel c (20 nm) has its centre at (c + 1/2) * 20 nm: world (c + 1/2) * 20 - 50
    assert tuple(image.scale) == (20.0, 20.0)
    assert tuple(image.translate) == pytest.approx((10.0 - 50.0, 10.0 - 50.0))
    assert image.metadata["pixel_size_nm"] == 20.0
    run(qtbot, w, "frc")
    assert w.status.value.startswith("FRC resolution:")
    assert "nm" in w.status.value and len(w.figure.axes[0].lines) >= 2


def test_cancel_changes_no_layers(qtbot, widget):
    viewer, w = widget
    w.start("drift")
    w.stop()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert "cancelled" in w.status.value
    assert [layer.name for layer in viewer.layers] == ["locs"]


def test_layer_without_a_table_is_refused(qtbot, widget):
    viewer, w = widget
    viewer.add_points(np.zeros((3, 2)), name="plain")
    w.layer.value = viewer.layers["plain"]
    w.start("render")
    assert w.worker is None
    assert "no localization table" in w.status.value and "frame, x_nm, y_nm" in w.status.value


def test_errors_of_a_step_are_one_line(qtbot, widget):
    viewer, w = widget
    w.window.value = 10_000  # one window only
    run(qtbot, w, "drift")
    assert "at least 2 time windows" in w.status.value and "\n" not in w.status.value
    assert [layer.name for layer in viewer.layers] == ["locs"]
