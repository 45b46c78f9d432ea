"""The "Uncertainty annotation" dock widget: threshold the posterior std into regions, draw more,
measure them, export the table (CSV) and the annotation image (Labels TIFF with pixel size).

The computations are napari-free (:mod:`napari_smlm_diffusion.annotate`); this module only moves
data between layers and that module. The annotation image is the "Uncertain regions" Labels layer
(as thresholded, or as edited with napari's brush and eraser) with the drawn regions of the
"Drawn regions" Shapes layer burned in on top; the table describes exactly that image.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, Container, FloatSlider, PushButton, SpinBox
from napari.layers import Image, Points, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog

from ...annotate import (
    add_drawn_regions,
    region_statistics,
    threshold_regions,
    write_region_table,
)
from ...errors import one_line
from ...geometry import (
    FIRST_FRAME_KEY,
    data_coordinate,
    nm_to_px,
    to_user_frame,
)
from ...io import write_tiff
from .annotation_layers import (
    default_threshold,
    drawn_masks,
    first_frame,
    localizations_on_grid,
    pixel_size_nm,
    to_grid,
)
from .layer_choice import OUTPUT_KEY, layer_combo, output_role
from .outputs import common_attributes, find_output, show_layer
from .posterior_layers import POINTS_NAME, STD_ROLE
from .region_table import RegionTable
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

REGIONS_NAME = "Uncertain regions"
DRAWN_NAME = "Drawn regions"
PREVIEW_DELAY_MS = 150
MIN_WIDTH_PX = 480
TABLE_MIN_HEIGHT_PX = 320


class AnnotationWidget(Container):
    """Threshold, draw, measure and export regions of high posterior uncertainty.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._closed = False
        self.active = True  # see set_active
        self._stats = pd.DataFrame()
        self._drawn: Any = None
        self._skipped = 0
        self._std_source: Any = None
        self._painted: Any = None
        self.std_layer, self._std_watcher = layer_combo(
            napari_viewer, "Std map", Image, lambda layer: output_role(layer) == STD_ROLE,
            "Posterior std layer (from the 'Diffusion posterior' widget) or any map to "
            "threshold")
        self.points_layer, self._points_watcher = layer_combo(
            napari_viewer, "Localizations", Points,
            lambda layer: output_role(layer) == "localizations" and layer.name == POINTS_NAME,
            "Localizations counted in each region (their 'uncertainty_nm' feature gives the "
            "median uncertainty)")
        self.threshold = FloatSlider(label="Threshold", min=0.0, max=1.0, step=0.001,
                                     tooltip="Std threshold, in the std map's units (those of "
                                     "the KDE, per pixel of the 4x grid): regions are the "
                                     "connected pixels whose std is above it (moving it redoes "
                                     "'Uncertain regions' and discards brush edits)")
        self.threshold.native.setToolTip(self.threshold.tooltip)  # also on its number box
        self.min_area = SpinBox(label="Min. area (px)", min=1, max=1_000_000, value=8,
                                tooltip="Drop regions smaller than this many pixels of the "
                                "std map (16 pixels of the 4x grid make one camera pixel)")
        self.live = CheckBox(text="Live preview", value=True,
                             tooltip="Update the regions and the table while the slider moves")
        self.apply = PushButton(text="Threshold now",
                                tooltip="Redo 'Uncertain regions' at the threshold now")
        self.draw = PushButton(text="Draw regions",
                               tooltip=f"Add (or select) the '{DRAWN_NAME}' Shapes layer over "
                               "the std map: draw rectangles, ellipses or polygons on a frame")
        self.measure = PushButton(text="Measure",
                                  tooltip="Update the table (area, mean std, localizations)")
        self.status = text_label("")
        self.table = RegionTable(self._go_to_region)
        self.export_csv = PushButton(text="Export table (CSV)...",
                                     tooltip="Write the region statistics table as CSV "
                                     "(areas in nm^2 and camera pixels), atomically")
        self.export_tiff = PushButton(text="Export labels (TIFF)...",
                                      tooltip="Write the region labels as TIFF with the pixel "
                                      "size (nm) of the 4x grid, atomically")
        row = Container(layout="horizontal", labels=False,
                        widgets=[self.apply, self.draw, self.measure])
        exports = Container(layout="horizontal", labels=False,
                            widgets=[self.export_csv, self.export_tiff])
        for box in (row, exports):
            box.margins = (0, 0, 0, 0)
        self.extend([self.std_layer, self.points_layer, self.threshold, self.min_area, self.live,
                     row, self.status])
        self.native.layout().addWidget(self.table)
        self.table.setMinimumHeight(TABLE_MIN_HEIGHT_PX)  # rows in view also in the SMLM dock
        self.native.setMinimumWidth(MIN_WIDTH_PX)  # room for the table's columns
        self.native.layout().addWidget(exports.native)
        self._exports = exports

        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(PREVIEW_DELAY_MS)
        self._timer.timeout.connect(self.update_regions)
        self._table_timer = QTimer()
        self._table_timer.setSingleShot(True)
        self._table_timer.setInterval(PREVIEW_DELAY_MS)
        self._table_timer.timeout.connect(self._refresh_table)
        self.std_layer.changed.connect(self._on_std_layer)
        self.threshold.changed.connect(self._on_threshold)
        self.min_area.changed.connect(self._on_threshold)
        self.apply.changed.connect(self.update_regions)
        self.draw.changed.connect(self.start_drawing)
        self.measure.changed.connect(self.update_table)
        self.points_layer.changed.connect(self._refresh_table)
        self.export_csv.changed.connect(self._ask_csv)
        self.export_tiff.changed.connect(self._ask_tiff)
        self.native.destroyed.connect(self._teardown)
        drawn = find_output(napari_viewer, DRAWN_NAME)
        if drawn is not None:
            self._watch_drawn(drawn)
        self._on_std_layer(self.std_layer.value)

    # -- messages -----------------------------------------------------------------------------
    def _say(self, text: str, error: bool = False) -> None:
        if not self._closed:
            show_text(self.status, text, error)

    def _fail(self, message: str) -> None:
        self._say(message, error=True)
        show_error(f"Uncertainty annotation: {message}")

    # -- threshold ----------------------------------------------------------------------------
    def _on_std_layer(self, layer: Any) -> None:
        """Follow the new map (and its data when a re-run replaces it); fit the slider to it."""
        if self._std_source is not None:
            self._std_source.events.data.disconnect(self._on_std_data)
        self._std_source = layer
        if layer is None:
            self._say("Run the 'Diffusion posterior' widget first: its 'Posterior std' layer "
                      "is thresholded here.")
            return
        layer.events.data.connect(self._on_std_data)
        self._fit_slider(layer, reset=True)

    def _on_std_data(self, _event: Any = None) -> None:
        if self._std_source is not None and not self._closed:
            self._fit_slider(self._std_source, reset=False)

    def _fit_slider(self, layer: Any, reset: bool) -> None:
        """Slider range = the map's range; start at :func:`default_threshold` (``reset``) or keep
        the threshold when it still lies in the range. Then threshold (live preview)."""
        data = np.asarray(layer.data)
        flat = data.reshape(-1)[:: max(1, data.size // 4_000_000)]
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            self._say(f"Layer '{layer.name}' holds no finite value.", error=True)
            return
        top = float(flat.max())
        low = float(min(flat.min(), 0.0))
        previous = float(self.threshold.value)
        with self.threshold.changed.blocked():
            self.threshold.max = max(top, low + 1e-6)
            self.threshold.min = low
            self.threshold.step = (self.threshold.max - low) / 1000.0
            if reset or not low <= previous <= top:
                self.threshold.value = default_threshold(flat)
            else:
                self.threshold.value = previous
        self._say(f"'{layer.name}': values {low:.3g} to {top:.3g}; threshold "
                  f"{self.threshold.value:.3g}.")
        if output_role(layer) != STD_ROLE:  # not a posterior std: wait for the user
            self._say(f"'{layer.name}' is not a posterior std map: move the slider or press "
                      "'Threshold now' to threshold it.")
        elif self.live.value and self.active:
            self.update_regions()

    def set_active(self, active: bool) -> None:
        """In the SMLM dock: threshold a new std map only while this tab is shown (so a
        posterior run elsewhere adds no regions layer); catch up when it is shown again."""
        self.active = active
        if active and self._std_source is not None and not self._closed:
            self._fit_slider(self._std_source, reset=False)

    def _on_threshold(self, _value: Any = None) -> None:
        if self.live.value:
            self._timer.start()  # restarts: the regions follow the slider once it rests

    def _std(self) -> Any:
        layer = self.std_layer.value
        if layer is None:
            raise ValueError("choose a std map (run the 'Diffusion posterior' widget first)")
        if layer.ndim not in (2, 3) or getattr(layer, "rgb", False):
            raise ValueError(f"layer '{layer.name}' has {layer.ndim} dimensions; expected a std "
                             "map (rows, cols) or (frames, rows, cols)")
        return layer

    def update_regions(self, _value: Any = None) -> Any:
        """Threshold the std map into the "Uncertain regions" Labels layer, update the table."""
        self._timer.stop()
        try:
            std = self._std()
            labels = threshold_regions(np.asarray(std.data), float(self.threshold.value),
                                       int(self.min_area.value))
        except (ValueError, MemoryError) as exc:
            self._fail(one_line(exc))
            return None
        attributes = common_attributes(std, "uncertain_regions", {
            "threshold": float(self.threshold.value), "min_area_px": int(self.min_area.value),
            "std_layer": std.name,
            **{key: std.metadata[key] for key in ("frames", FIRST_FRAME_KEY, "pixel_size_nm")
               if key in std.metadata}}, std.ndim)
        attributes.update(name=REGIONS_NAME, scale=tuple(std.scale),
                          translate=tuple(std.translate), opacity=1.0)
        new = find_output(self._viewer, REGIONS_NAME) is None
        layer = show_layer(self._viewer, (labels, attributes, "labels"))
        if new:
            layer.contour = 1  # outlines: the std map stays visible inside the regions
        if self._painted is not layer:  # brush and eraser edits update the table
            self._unwatch_painted()
            self._painted = layer
            layer.events.paint.connect(self._after_paint)
        self.update_table()
        return layer

    # -- drawn regions ------------------------------------------------------------------------
    def start_drawing(self, _value: Any = None) -> Any:
        """Add (or select) the "Drawn regions" Shapes layer over the std map, in polygon mode."""
        try:
            std = self._std()
        except ValueError as exc:
            self._fail(one_line(exc))
            return None
        layer = find_output(self._viewer, DRAWN_NAME)
        if layer is None:
            attributes = common_attributes(std, "drawn_regions", {}, std.ndim)
            layer = self._viewer.add_shapes(
                ndim=std.ndim, name=DRAWN_NAME, scale=tuple(std.scale),
                translate=tuple(std.translate), face_color=[1.0, 1.0, 1.0, 0.12],
                edge_color="white", edge_width=1.0, **attributes)  # 1 pixel of the std map
        self._watch_drawn(layer)
        self._viewer.layers.selection.active = layer
        layer.mode = "add_polygon"
        self._say("Draw on the frame shown: click the corners of a polygon, double-click to "
                  "close it (or pick rectangle/ellipse in the layer controls).")
        return layer

    def _watch_drawn(self, layer: Any) -> None:
        if self._drawn is layer:
            return
        self._unwatch_drawn()
        self._drawn = layer
        layer.events.data.connect(self._on_drawn)

    def _unwatch_drawn(self) -> None:
        if self._drawn is not None:
            self._drawn.events.data.disconnect(self._on_drawn)
            self._drawn = None

    def _unwatch_painted(self) -> None:
        if self._painted is not None:
            self._painted.events.paint.disconnect(self._after_paint)
            self._painted = None

    def _after_paint(self, _event: Any = None) -> None:
        self._table_timer.start()  # napari emits "paint" before it writes the new labels

    def _on_drawn(self, event: Any = None) -> None:
        if getattr(event, "action", "added") in ("added", "removed", "changed"):
            self._refresh_table()

    def _refresh_table(self, _value: Any = None) -> None:
        """Update the table after a change of the inputs (quietly while there is no std map)."""
        if self.std_layer.value is not None and not self._closed:
            self.update_table()

    # -- statistics ---------------------------------------------------------------------------
    def _drawn_masks(self, std: Any) -> tuple[list[tuple[int | None, np.ndarray]], int]:
        layer = find_output(self._viewer, DRAWN_NAME)
        if layer is None or not isinstance(layer, Shapes):
            return [], 0
        return drawn_masks(layer, std)

    def annotation_image(self) -> tuple[Any, np.ndarray, dict[int, str]]:
        """The std layer, the annotation image (regions + drawn regions) and label sources."""
        std = self._std()
        regions = find_output(self._viewer, REGIONS_NAME)
        if regions is not None and regions.data.shape == std.data.shape:
            labels = np.asarray(regions.data)
        else:
            labels = np.zeros(std.data.shape, dtype=np.int32)
        drawn, self._skipped = self._drawn_masks(std)
        combined, sources = add_drawn_regions(labels, drawn)
        return std, combined, sources

    def update_table(self, _value: Any = None) -> pd.DataFrame | None:
        """Measure the annotation image and show the table."""
        try:
            std, labels, sources = self.annotation_image()
            positions, uncertainty = localizations_on_grid(self.points_layer.value, std)
            stats = region_statistics(labels, np.asarray(std.data), pixel_size_nm(std),
                                      positions, uncertainty, first_frame(std), sources)
        except (ValueError, MemoryError) as exc:
            self._fail(one_line(exc))
            return None
        self._stats = stats
        if not self._closed:
            self.table.show_table(stats)
            drawn = int((stats["source"] == "drawn").sum()) if len(stats) else 0
            text = (f"{len(stats)} regions ({drawn} drawn; threshold {self.threshold.value:.3g})"
                    f", {int(stats['localizations'].sum())} localizations inside."
                    if len(stats) else "No region: lower the threshold or draw regions.")
            if self._skipped:
                text += f" {self._skipped} line/path shape(s) have no area: left out."
            self._say(text)
        return stats

    @property
    def statistics(self) -> pd.DataFrame:
        """The table shown (see :func:`~napari_smlm_diffusion.annotate.region_statistics`)."""
        return self._stats

    def _go_to_region(self, region: int) -> None:
        """Show the frame of ``region`` and centre the view on it."""
        std = self.std_layer.value
        rows = self._stats[self._stats["region"] == region]
        if std is None or rows.empty:
            return
        row = rows.iloc[0]
        pixel = pixel_size_nm(std)
        grid = [data_coordinate(nm_to_px(row["y_nm"], pixel)),
                data_coordinate(nm_to_px(row["x_nm"], pixel))]
        if std.ndim == 3 and not pd.isna(row["frame"]):
            grid.insert(0, int(row["frame"]) - first_frame(std))
        world = np.asarray(std.data_to_world(grid), dtype=float)
        if std.ndim == 3:
            self._viewer.dims.set_point(self._viewer.dims.ndim - 3, float(world[0]))
        camera = getattr(self._viewer, "scene", self._viewer).camera
        camera.center = tuple(float(v) for v in world[-2:])

    # -- export -------------------------------------------------------------------------------
    def export_table(self, path: str | Path) -> Path | None:
        """Write the statistics of the current annotation as CSV (atomic)."""
        stats = self.update_table()
        if stats is None:
            return None
        try:
            written = write_region_table(path, stats)
        except (OSError, ValueError) as exc:
            self._fail(f"could not write {path}: {one_line(exc)}")
            return None
        show_info(f"Uncertainty annotation: {len(stats)} regions written to {written}")
        return written

    def export_labels(self, path: str | Path) -> Path | None:
        """Write the annotation image as a TIFF with the std map's pixel size (atomic)."""
        try:
            std, labels, sources = self.annotation_image()
            metadata = {"source_layer": std.name, "threshold": float(self.threshold.value),
                        "min_area_px": int(self.min_area.value),
                        "first_frame": to_user_frame(first_frame(std)),
                        "drawn_regions": sorted(k for k, v in sources.items() if v == "drawn")}
            if int(labels.max(initial=0)) > np.iinfo(np.uint16).max:
                raise ValueError(f"{int(labels.max())} regions do not fit a 16-bit TIFF; raise "
                                 "the threshold or the minimum area")
            written = write_tiff(path, labels.astype(np.uint16),
                                 pixel_size_nm=pixel_size_nm(std), metadata=metadata)
        except (OSError, ValueError) as exc:
            self._fail(f"could not write {path}: {one_line(exc)}")
            return None
        show_info(f"Uncertainty annotation: labels written to {written}")
        return written

    def _ask_csv(self, _value: Any = None) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Export region table",
                                              "uncertain_regions.csv", "CSV (*.csv)")
        if path:
            self.export_table(path)

    def _ask_tiff(self, _value: Any = None) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Export annotation labels",
                                              "uncertain_regions.tif", "TIFF (*.tif *.tiff)")
        if path:
            self.export_labels(path)

    def _teardown(self, *_args: Any) -> None:
        """The widget is closing: drop all connections."""
        self._closed = True
        self._timer.stop()
        self._table_timer.stop()
        self._std_watcher.close()
        self._points_watcher.close()
        self._unwatch_drawn()
        self._unwatch_painted()
        if self._std_source is not None:
            self._std_source.events.data.disconnect(self._on_std_data)


__all__ = ["DRAWN_NAME", "OUTPUT_KEY", "REGIONS_NAME", "AnnotationWidget", "default_threshold",
           "to_grid"]
