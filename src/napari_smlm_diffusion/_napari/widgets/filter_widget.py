"""The "Localization filters" widget: histograms of the localizations' numeric columns with a
range per column that filters the Points layer live and what is exported.

The filter sets the layer's ``shown`` mask (nothing is deleted); the npe2 CSV writer and the
export buttons write only the shown localizations. A column filters only when its range is
narrower than the column's full range; then localizations whose value is undetermined (NaN,
e.g. the uncertainty of a molecule found in fewer than two samples) are left out too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from napari.layers import Points
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ...errors import one_line
from ...io import write_localizations
from ...postprocess.formats import HDF5_SUFFIXES
from ...postprocess.picasso_format import write_picasso
from ..writer import table_from_points
from .histogram import RangeHistogram
from .layer_camera import layer_camera
from .layer_choice import is_input_layer, layer_combo, output_role
from .settings import get_settings

if TYPE_CHECKING:
    import napari

#: Columns that are positions or labels, not quantities to filter on.
NOT_FILTERED = ("frame", "x_nm", "y_nm", "id", "z_nm", "emitter")  # positions and identities
#: Column -> (label, unit, what it is), for the labels and tooltips.
DESCRIPTIONS: dict[str, tuple[str, str, str]] = {
    "photons": ("Photons", "photons", "photons of the molecule in the frame"),
    "uncertainty_nm": ("Uncertainty", "nm", "per-axis 1-sigma localization uncertainty"),
    "uncertainty_x_nm": ("Uncertainty x", "nm", "1-sigma uncertainty along x (columns)"),
    "uncertainty_y_nm": ("Uncertainty y", "nm", "1-sigma uncertainty along y (rows)"),
    "detection_probability": ("Detection probability", "0-1",
                              "fraction of the posterior samples in which the molecule appears"),
    "sigma_nm": ("PSF sigma", "nm", "fitted PSF standard deviation"),
    "background": ("Background", "photons", "background photons per pixel"),
    "bkgstd": ("Background std", "photons", "background noise per pixel"),
    "score": ("CNN score", "KDE units", "peak height of the KDE CNN's output"),
    "crlb_nm": ("CRLB", "nm", "Cramer-Rao lower bound of the localization precision"),
    "posterior_std_x_nm": ("Posterior spread x", "nm", "spread of the molecule's position "
                           "over the posterior samples along x"),
    "posterior_std_y_nm": ("Posterior spread y", "nm", "spread of the molecule's position "
                           "over the posterior samples along y"),
}


@dataclass(frozen=True)
class Acquisition:
    """What an export may need besides the table: the camera pixel size (nm) the localizations
    were measured with, and the raw stack's size (pixels, frames) when known."""

    pixel_size_nm: float | None
    width: int | None = None
    height: int | None = None
    frames: int | None = None


def _write_csv(path: str, table: pd.DataFrame, _acquisition: Acquisition) -> Any:
    return write_localizations(path, table)


def _write_picasso(path: str, table: pd.DataFrame, acquisition: Acquisition) -> Any:
    if acquisition.pixel_size_nm is None:
        raise ValueError("Picasso HDF5 stores camera pixels, but the camera pixel size of these "
                         "localizations is unknown: choose a result layer of the KDE CNN or the "
                         "posterior, whose raw stack has a camera")
    if Path(path).suffix.lower() not in HDF5_SUFFIXES:
        path = f"{path}.hdf5"
    return write_picasso(path, table, acquisition.pixel_size_nm, acquisition.width,
                         acquisition.height, acquisition.frames)


#: Export formats: button text -> (file filter, writer(path, table, acquisition)). Add formats
#: here.
EXPORTERS: dict[str, tuple[str, Callable[[str, pd.DataFrame, Acquisition], Any]]] = {
    "ThunderSTORM CSV": ("CSV (*.csv)", _write_csv),
    "Picasso HDF5": ("Picasso HDF5 (*.hdf5)", _write_picasso),
}


def numeric_columns(features: pd.DataFrame) -> list[str]:
    """Columns of ``features`` offered as filters: numeric, not positions, with a finite value."""
    return [name for name in features.columns
            if name not in NOT_FILTERED and pd.api.types.is_numeric_dtype(features[name])
            and not pd.api.types.is_bool_dtype(features[name])
            and np.isfinite(features[name].to_numpy(dtype=float)).any()]


def describe(column: str) -> tuple[str, str]:
    """Label (with unit) and tooltip of a column."""
    unit = "nm" if column.endswith("_nm") else ""
    label, unit, what = DESCRIPTIONS.get(column, (column, unit, column))
    suffix = f" ({unit})" if unit else ""
    return f"{label}{suffix}", f"{what}{suffix}: drag on the histogram or type the range"


def filter_mask(features: pd.DataFrame, ranges: dict[str, tuple[float, float]],
                full: dict[str, tuple[float, float]]) -> np.ndarray:
    """Rows inside every active range (one narrower than the column's ``full`` range)."""
    keep = np.ones(len(features), dtype=bool)
    for column, (low, high) in ranges.items():
        if low <= full[column][0] and high >= full[column][1]:
            continue
        values = features[column].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            keep &= (values >= low) & (values <= high)
    return keep


class _ColumnFilter:
    """Histogram and min/max boxes of one column."""

    def __init__(self, column: str, values: np.ndarray, changed: Callable[[], None]) -> None:
        self.column = column
        self.histogram = RangeHistogram(values)
        self.full = (self.histogram.minimum, self.histogram.maximum)
        self.selection = self.full  # exact; the boxes show it rounded
        label, tooltip = describe(column)
        self.label = QLabel(label)
        self.label.setWordWrap(True)
        self.label.setToolTip(tooltip)
        self.histogram.setToolTip(tooltip)
        span = (self.full[1] - self.full[0]) or 1.0  # a constant column still gets boxes
        decimals = int(min(max(2 - np.floor(np.log10(span)), 0), 6))
        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        for box, value, which in ((self.low, self.full[0], "lowest"),
                                  (self.high, self.full[1], "highest")):
            box.setDecimals(decimals)
            box.setRange(self.full[0] - span, self.full[1] + span)
            box.setSingleStep(span / 100)
            box.setValue(value)
            box.setKeyboardTracking(False)
            box.setMinimumWidth(90)
            box.setToolTip(f"{which} value kept; {tooltip}")
            box.valueChanged.connect(self._typed)
        self.histogram.dragged.connect(self._dragged)
        self._changed = changed

    def _typed(self, _value: float) -> None:
        self.selection = (self.low.value(), self.high.value())
        self.histogram.set_selection(*self.selection)
        self._changed()

    def _dragged(self, low: float, high: float) -> None:
        self.set_range(low, high)
        self._changed()

    def set_range(self, low: float, high: float) -> None:
        """Select ``[low, high]`` (shown rounded in the boxes) without filtering yet."""
        self.selection = (float(low), float(high))
        for box, value in ((self.low, low), (self.high, high)):
            box.blockSignals(True)
            box.setValue(value)
            box.blockSignals(False)
        self.histogram.set_selection(low, high)

    def range(self) -> tuple[float, float]:
        """The selected range (as typed: low may exceed high, then nothing passes)."""
        return self.selection


class FilterWidget(QWidget):
    """Filter a Points layer of localizations by ranges of its columns; export what is shown.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self._viewer = napari_viewer
        self._layer: Any = None
        self.filters: dict[str, _ColumnFilter] = {}
        self.layer, self._watcher = layer_combo(
            napari_viewer, "Localizations", Points,
            lambda layer: output_role(layer) == "localizations",
            "Points layer of localizations (a result of the KDE CNN or the posterior, or an "
            "opened table)")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.reset = QPushButton("Show all")
        self.reset.setToolTip("Reset every range to the column's full range")
        self.exports = {name: QPushButton(f"Export {name}...") for name in EXPORTERS}
        for name, button in self.exports.items():
            button.setToolTip(f"Write the shown localizations as {name} (coordinates in nm, "
                              "frames from 1), atomically")
            button.clicked.connect(lambda _c=False, n=name: self._ask_and_export(n))
        self.message = QLabel()
        self.message.setWordWrap(True)
        self._grid = QGridLayout()
        self._grid.setColumnStretch(0, 1)

        top = QHBoxLayout()
        top.addWidget(QLabel("Localizations"))
        top.addWidget(self.layer.native, 1)
        buttons = QHBoxLayout()
        for button in (self.reset, *self.exports.values()):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        layout.addLayout(self._grid)
        layout.addLayout(buttons)
        layout.addWidget(self.message)
        layout.addStretch(1)

        self.layer.changed.connect(self._on_layer)
        self.reset.clicked.connect(self.show_all)
        self.destroyed.connect(lambda *_args: self._teardown())
        self._on_layer(self.layer.value)

    # -- layer ----------------------------------------------------------------------------------
    def _on_layer(self, layer: Any = None) -> None:
        if self._layer is not None:
            self._layer.events.data.disconnect(self._data_changed)
        self._layer = layer
        if layer is not None:
            layer.events.data.connect(self._data_changed)
        self._rebuild()

    def _data_changed(self, _event: Any = None) -> None:
        # A re-run sets the data, then the features: rebuild once both are there.
        QTimer.singleShot(0, self._rebuild)

    def _rebuild(self, _event: Any = None) -> None:
        """New histograms for the chosen layer's columns; every point shown."""
        _clear_layout(self._grid)
        self.filters = {}
        layer = self._layer
        features = layer.features if layer is not None else pd.DataFrame()
        for row, column in enumerate(numeric_columns(features)):
            entry = _ColumnFilter(column, features[column].to_numpy(dtype=float), self.apply)
            boxes = QHBoxLayout()
            boxes.addWidget(entry.label, 1)
            boxes.addWidget(entry.low)
            boxes.addWidget(QLabel("to"))
            boxes.addWidget(entry.high)
            self._grid.addLayout(boxes, 2 * row, 0)
            self._grid.addWidget(entry.histogram, 2 * row + 1, 0)
            self.filters[column] = entry
        if layer is not None and len(layer.data):
            layer.shown = np.ones(len(layer.data), dtype=bool)
        self._show_summary()

    # -- filtering ------------------------------------------------------------------------------
    def ranges(self) -> dict[str, tuple[float, float]]:
        """The selected range of every column."""
        return {column: entry.range() for column, entry in self.filters.items()}

    def set_range(self, column: str, low: float, high: float) -> None:
        """Select ``[low, high]`` for ``column`` and filter."""
        self.filters[column].set_range(low, high)
        self.apply()

    def apply(self) -> None:
        """Show the localizations inside every range (live)."""
        layer = self._layer
        if layer is None or not len(layer.data):
            self._show_summary()
            return
        full = {column: entry.full for column, entry in self.filters.items()}
        layer.shown = filter_mask(layer.features, self.ranges(), full)
        self._show_summary()

    def show_all(self, _checked: bool = False) -> None:
        """Reset every range."""
        for entry in self.filters.values():
            entry.set_range(*entry.full)
        self.apply()

    def _show_summary(self) -> None:
        layer = self._layer
        if layer is None:
            self.summary.setText("No localizations: run the KDE CNN or the posterior first.")
            return
        total = len(layer.data)
        shown = int(np.count_nonzero(layer.shown)) if total else 0
        self.summary.setText(f"Showing {shown} of {total} localizations of '{layer.name}'; "
                             "exports and File > Save write the shown ones.")

    # -- export ---------------------------------------------------------------------------------
    def shown_table(self) -> pd.DataFrame:
        """The shown localizations as a table (nm, frames from 0)."""
        data, attributes, _ = self._layer.as_layer_data_tuple()
        return table_from_points(data, attributes)

    def acquisition(self) -> Acquisition:
        """Pixel size and stack size of the chosen layer's localizations.

        The pixel size is that of the camera the localizations were computed with (recorded
        in the result layer's metadata by the KDE CNN and posterior widgets), else the current
        camera of its raw layer (:mod:`.layer_camera`); the size is that of the raw layer.
        """
        metadata = self._layer.metadata
        raw = next((layer for layer in self._viewer.layers
                    if layer.name == metadata.get("source_layer") and is_input_layer(layer)),
                   None)
        pixel = (metadata.get("camera") or {}).get("pixel_size")
        if pixel is None and raw is not None:
            pixel = layer_camera(raw, get_settings())[0]["pixel_size"]
        if raw is None:
            return Acquisition(None if pixel is None else float(pixel))
        shape = raw.data.shape
        return Acquisition(None if pixel is None else float(pixel), int(shape[-1]),
                           int(shape[-2]), int(shape[0]) if len(shape) == 3 else 1)

    def export(self, name: str, path: str) -> bool:
        """Write the shown localizations with the exporter ``name``; say what happened."""
        if self._layer is None:
            self._say("Choose a layer of localizations first.", error=True)
            return False
        try:
            table = self.shown_table()
            written = EXPORTERS[name][1](path, table, self.acquisition())
        except (OSError, ValueError, KeyError) as exc:
            self._say(f"Could not export: {one_line(exc)}", error=True)
            return False
        self._say(f"Wrote {len(table)} localizations to {written}.")
        return True

    def _ask_and_export(self, name: str) -> None:
        path, _ = QFileDialog.getSaveFileName(self, f"Export {name}", "", EXPORTERS[name][0])
        if path:
            self.export(name, path)

    def _say(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #ff6b6b;" if error else "")

    def _teardown(self) -> None:
        self._watcher.close()
        if self._layer is not None:
            self._layer.events.data.disconnect(self._data_changed)
            self._layer = None


def _clear_layout(layout: Any) -> None:
    """Remove and delete every widget of ``layout`` and of its nested layouts, at once (a widget
    only scheduled for deletion would still be drawn under the new ones)."""
    while layout.count():
        item = layout.takeAt(0)
        widget, inner = item.widget(), item.layout()
        if widget is not None:
            widget.setParent(None)
            widget.deleteLater()
        elif inner is not None:
            _clear_layout(inner)
