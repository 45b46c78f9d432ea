"""Issue 16 item 5: localization filters (histograms, live ranges on the Points layer) and the
exports of what is shown."""

import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import QPoint, Qt

from napari_helpers import RAW, add_widget
from napari_smlm_diffusion._napari.widgets.outputs import points_layer, show_layer
from napari_smlm_diffusion._napari.writer import write_points_csv
from napari_smlm_diffusion.io import read_localizations

pytestmark = [pytest.mark.gui, pytest.mark.usefixtures("isolated_settings")]
NAME = "Localizations"


def table(n=200, seed=0):
    rng = np.random.default_rng(seed)
    uncertainty = rng.uniform(5, 40, n)
    uncertainty[::10] = np.nan  # undetermined
    return pd.DataFrame({"frame": rng.integers(0, 100, n), "x_nm": rng.uniform(0, 6400, n),
                         "y_nm": rng.uniform(0, 6400, n), "photons": rng.uniform(500, 5000, n),
                         "uncertainty_nm": uncertainty,
                         "detection_probability": rng.uniform(0, 1, n)})


def add_points(viewer, data):
    raw = viewer.layers[RAW]
    return show_layer(viewer, points_layer(raw, data, 100.0, {}, name=NAME,
                                           color_by=("uncertainty_nm",)))


def test_ranges_filter_the_points_live_and_the_exports(viewer, qtbot, tmp_path):
    data = table()
    layer = add_points(viewer, data)
    widget = add_widget(viewer, "Localization filters")
    assert widget.layer.value is layer
    assert list(widget.filters) == ["photons", "uncertainty_nm", "detection_probability"]
    assert widget.filters["uncertainty_nm"].label.text() == "Uncertainty (nm)"
    assert "Showing 200 of 200" in widget.summary.text()

    widget.set_range("photons", 1000.0, 3000.0)  # NaN uncertainties stay: that column is free
    expected = (data.photons >= 1000) & (data.photons <= 3000)
    np.testing.assert_array_equal(layer.shown, expected)
    widget.set_range("uncertainty_nm", 0.0, 20.0)  # now they go
    expected &= data.uncertainty_nm <= 20
    np.testing.assert_array_equal(layer.shown, expected)
    assert f"Showing {expected.sum()} of 200" in widget.summary.text()

    assert widget.export("ThunderSTORM CSV", str(tmp_path / "shown.csv"))
    written = read_localizations(tmp_path / "shown.csv")
    assert len(written) == expected.sum() > 0
    np.testing.assert_allclose(written["x_nm"], data.x_nm[expected], atol=1e-3)
    np.testing.assert_array_equal(written["frame"], data.frame[expected])
    assert not list(tmp_path.glob("*.tmp*"))  # atomic: no temporary left
    layer_data, attributes, _ = layer.as_layer_data_tuple()  # File > Save: the same rows
    write_points_csv(str(tmp_path / "saved.csv"), layer_data, attributes)
    assert len(read_localizations(tmp_path / "saved.csv")) == expected.sum()

    # a drag on a histogram selects a range
    histogram = widget.filters["detection_probability"].histogram
    histogram.resize(201, 48)
    qtbot.mousePress(histogram, Qt.MouseButton.LeftButton, pos=QPoint(0, 20))
    qtbot.mouseMove(histogram, QPoint(100, 20))
    qtbot.mouseRelease(histogram, Qt.MouseButton.LeftButton, pos=QPoint(100, 20))
    low, high = widget.filters["detection_probability"].range()
    assert low == data.detection_probability.min()  # from the left edge: the minimum
    assert high == pytest.approx((histogram.low + histogram.high) / 2)  # the middle
    assert histogram.low > low  # the bins span the 2nd-98th percentiles
    expected &= (data.detection_probability >= low) & (data.detection_probability <= high)
    np.testing.assert_array_equal(layer.shown, expected)

    widget.show_all()
    assert layer.shown.all()

    widget.set_range("photons", 4000.0, 5000.0)
    add_points(viewer, table(50, seed=1))  # a re-run replaces the data: new histograms
    qtbot.waitUntil(lambda: "Showing 50 of 50" in widget.summary.text(), timeout=5000)
    assert layer.shown.all() and widget.filters["photons"].range()[0] < 4000


def test_export_without_localizations_says_so(viewer, tmp_path):
    widget = add_widget(viewer, "Localization filters")
    assert widget.layer.value is None or widget.layer.value.name == "Ground truth"
    widget.layer.value = None if widget.layer.value is None else widget.layer.value
    viewer.layers.remove("Ground truth")
    assert widget.layer.value is None and "No localizations" in widget.summary.text()
    assert not widget.export("ThunderSTORM CSV", str(tmp_path / "x.csv"))
    assert "Choose a layer" in widget.message.text() and not (tmp_path / "x.csv").exists()
