"""The "Post-processing" dock widget: drift correction, merging, rendering and FRC of a Points
layer of localizations, each in a worker thread with progress and Cancel; plots embedded. The
last drift curve can then be applied to an image layer of per-frame maps (KDE or posterior
stack): its frames shifted back and summed (:mod:`.drift_images`).

The localization table is the layer's features (``frame``, ``x_nm``, ``y_nm``, ... as the KDE CNN
and posterior widgets make them). Results lie over the input: a corrected or merged table becomes
a Points layer with the input's geometry (the ``raw_scale``/``raw_translate`` of its metadata),
a rendering an image layer whose pixel ``(r, c)`` covers ``[c p, (c+1) p)`` nm like the raw
camera grid. Re-running replaces a result layer in place. The computations are those of
:mod:`napari_smlm_diffusion.postprocess`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, SpinBox
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Points
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error

from ...postprocess.drift import DriftResult, apply_drift, estimate_drift
from ...postprocess.frc import FrcResult, frc_localizations
from ...postprocess.merge import merge_blinks
from ...postprocess.plots import draw_drift, draw_frc
from ...postprocess.render import render
from ..layers import points_from_table
from .drift_images import drift_sum_job, drift_sum_layer, frame_maps, per_frame_layers
from .jobs import Failed, Finished, Job, Progress, Stopped, guarded, one_line
from .layer_choice import OUTPUT_KEY
from .outputs import common_attributes, contrast, show_layer
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

REQUIRED = ("frame", "x_nm", "y_nm")


@dataclass(frozen=True)
class Step:
    """One post-processing run: what to compute on which table."""

    name: str
    compute: Callable[[pd.DataFrame, Callable[[], bool]], Any]
    table: pd.DataFrame


def step_job(step: Step, stop: threading.Event) -> Job:
    """Run ``step`` (``compute(table, should_stop)``); Stopped if cancelled."""
    yield Progress(0, 1, f"{step.name}...")
    result = step.compute(step.table, stop.is_set)
    if stop.is_set():
        return Stopped(0, 1)
    yield Progress(1, 1, f"{step.name}: done")
    return Finished(result, "cpu", 0.0)


class PostprocessWidget(Container):
    """Drift, merge, render and FRC of a Points layer of localizations.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._worker: Any = None
        self._stop = threading.Event()
        self._bar: progress | None = None
        self._source: Any = None
        #: The last drift curve (nm, frames from 0) and the name of the layer it was estimated on.
        self.drift_curve: tuple[np.ndarray, str] | None = None
        self.layer = ComboBox(label="Localizations", choices=self._points_layers,
                              tooltip="A Points layer whose features hold frame, x_nm, y_nm")
        self.window = SpinBox(label="Drift window", min=0, max=10**7, value=0,
                              tooltip="Frames per time window (frames); 0: about 20 windows")
        self.refine = CheckBox(text="Refine drift (re-found molecules)", value=True,
                               tooltip="Refine the cross-correlation drift by the displacement "
                               "of molecules found again in neighbouring windows")
        self.radius = FloatSpinBox(label="Merge radius (nm)", min=1.0, max=10_000.0, value=50.0,
                                   tooltip="Largest distance in nm between detections of one "
                                   "molecule in consecutive frames")
        self.gap = SpinBox(label="Merge gap (frames)", min=0, max=1000, value=1,
                           tooltip="Dark frames allowed within one blink (frames)")
        self.pixel = FloatSpinBox(label="Render pixel (nm)", min=0.1, max=10_000.0, value=10.0,
                                  tooltip="Pixel size of the rendered image in nm")
        self.blur = ComboBox(label="Blur", choices=["histogram", "uncertainty", "fixed"],
                             value="uncertainty",
                             tooltip="histogram: counts per pixel; uncertainty: each molecule as "
                             "a Gaussian of its own sigma (nm); fixed: the blur below")
        self.blur_nm = FloatSpinBox(label="Fixed blur (nm)", min=0.1, max=10_000.0, value=20.0,
                                    tooltip="Gaussian sigma in nm of the 'fixed' blur")
        self.frc_pixel = FloatSpinBox(label="FRC pixel (nm)", min=0.1, max=1000.0, value=5.0,
                                      tooltip="Pixel size in nm of the two half images whose "
                                      "Fourier ring correlation is computed")
        self.block = SpinBox(label="FRC block (frames)", min=1, max=10**6, value=50,
                             tooltip="The halves alternate blocks of this many frames")
        self.drift_button = PushButton(text="Correct drift",
                                       tooltip="Estimate the drift and add a corrected layer")
        self.merge_button = PushButton(text="Merge blinks",
                                       tooltip="Link the detections of one molecule over "
                                       "consecutive frames; add a merged layer")
        self.render_button = PushButton(text="Render", tooltip="Render the localizations as "
                                        "an image layer over the raw stack")
        self.frc_button = PushButton(text="FRC", tooltip="Resolution by Fourier ring "
                                     "correlation at the 1/7 threshold (nm)")
        self.images = ComboBox(label="Per-frame images", choices=self._frame_layers,
                               tooltip="An image layer of per-frame maps aligned with the raw "
                               "data (KDE, posterior mean or std)")
        self.apply_button = PushButton(text="Apply drift to image layer", enabled=False,
                                       tooltip="Shift every frame of the image layer back by "
                                       "the last drift curve and add their sum as a layer")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop the running step; no layer changes")
        self.status = text_label("")
        self.figure = Figure(figsize=(4, 3), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(220)
        self._buttons = (self.drift_button, self.merge_button, self.render_button,
                         self.frc_button)
        row = Container(layout="horizontal", labels=False, widgets=[*self._buttons, self.cancel])
        row.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.window, self.refine, self.radius, self.gap, self.pixel,
                     self.blur, self.blur_nm, self.frc_pixel, self.block, row, self.images,
                     self.apply_button, self.status])
        self.native.layout().addWidget(self.canvas)
        self.drift_button.changed.connect(lambda: self.start("drift"))
        self.merge_button.changed.connect(lambda: self.start("merge"))
        self.render_button.changed.connect(lambda: self.start("render"))
        self.frc_button.changed.connect(lambda: self.start("frc"))
        self.apply_button.changed.connect(lambda: self.start("drift image"))
        self.cancel.changed.connect(self.stop)
        for event in ("inserted", "removed"):
            getattr(napari_viewer.layers.events, event).connect(self._refresh)

    # -- inputs -------------------------------------------------------------------------------
    def _points_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Points)]

    def _frame_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return per_frame_layers(self._viewer)

    def _refresh(self, _event: Any = None) -> None:
        self.layer.reset_choices()
        self.images.reset_choices()

    def _table(self) -> pd.DataFrame:
        layer = self.layer.value
        if layer is None:
            raise ValueError("choose a Points layer of localizations (run the KDE CNN first)")
        features = layer.features
        missing = [c for c in REQUIRED if c not in features.columns]
        if missing:
            raise ValueError(f"layer '{layer.name}' has no localization table: its features "
                             f"lack {', '.join(missing)}")
        return features.reset_index(drop=True)

    def _compute(self, what: str) -> Callable:
        if what == "drift":
            window = int(self.window.value) or None
            refine = bool(self.refine.value)

            def drift(table, stopped):
                result = estimate_drift(table, window=window, refine=refine,
                                        should_stop=stopped)
                return result, apply_drift(table, result.drift_nm)
            return drift
        if what == "merge":
            radius, gap = float(self.radius.value), int(self.gap.value)
            return lambda table, stopped: merge_blinks(table, radius, gap)
        if what == "render":
            pixel = float(self.pixel.value)
            blur = {"histogram": None, "uncertainty": "uncertainty"}.get(
                self.blur.value, float(self.blur_nm.value))
            return lambda table, stopped: render(table, pixel, blur)
        pixel, block = float(self.frc_pixel.value), int(self.block.value)
        return lambda table, stopped: frc_localizations(table, pixel, block)

    # -- run ----------------------------------------------------------------------------------
    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._worker

    def _job(self, what: str) -> tuple[Job, Any]:
        """The job of ``what`` and the layer it reads; ValueError if the inputs are missing."""
        if what == "drift image":
            if self.drift_curve is None:
                raise ValueError("correct the drift of a Points layer first")
            curve, name = self.drift_curve
            return (drift_sum_job(frame_maps(self.images.value), curve, f"drift of '{name}'",
                                  self._stop), self.images.value)
        return step_job(Step(what, self._compute(what), self._table()), self._stop), \
            self.layer.value

    def start(self, what: str) -> None:
        """Run ``what`` ("drift", "merge", "render", "frc" or "drift image") in a worker
        thread."""
        if self._worker is not None:
            return
        self._stop = threading.Event()
        try:
            job, self._source = self._job(what)
        except ValueError as exc:
            self._fail(one_line(exc))
            return
        self._bar = progress(total=1, desc=f"{what} on '{self._source.name}'")
        worker = create_worker(lambda: (yield from guarded(job, what)), _start_thread=False)
        worker.yielded.connect(self._on_message)
        worker.returned.connect(lambda outcome: self._on_outcome(what, outcome))
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self._enable(False)
        worker.start()

    def stop(self, _value: Any = None) -> None:
        """Ask the running step to stop (drift stops between window pairs; the others finish
        their single pass and are discarded)."""
        if self._worker is not None:
            self._stop.set()
            show_text(self.status, "Cancelling...")

    def _enable(self, idle: bool) -> None:
        for button in self._buttons:
            button.enabled = idle
        self.apply_button.enabled = idle and self.drift_curve is not None
        self.cancel.enabled = not idle

    def _fail(self, message: str) -> None:
        show_text(self.status, message, error=True)
        show_error(f"Post-processing: {message}")

    def _on_message(self, message: Progress) -> None:
        show_text(self.status, message.text)
        if self._bar is not None:
            self._bar.total = max(message.total, 1)
            self._bar.update(message.done - self._bar.n)

    def _on_outcome(self, what: str, outcome: Finished | Stopped | Failed) -> None:
        if isinstance(outcome, Failed):
            self._fail(outcome.message)
        elif isinstance(outcome, Stopped) or self._stop.is_set():
            show_text(self.status, f"{what}: cancelled; no layers were changed.")
        elif self._source not in self._viewer.layers:
            self._fail(f"the layer '{self._source.name}' was removed; no results were added")
        else:
            try:
                show_text(self.status, self._show(what, outcome.result))
            except Exception as exc:  # never let a display problem escape as a traceback
                self._fail(f"could not show the results: {one_line(exc)}")

    def _on_finished(self) -> None:
        bar, self._bar = self._bar, None
        self._worker = None
        self._enable(True)
        if bar is not None:
            bar.close()

    # -- results ------------------------------------------------------------------------------
    def _geometry(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Scale/translate (nm) that placed the input table on its layer (identity if unknown)."""
        layer, ndim = self._source, self._source.ndim
        scale = tuple(layer.metadata.get("raw_scale", (1.0,) * ndim))
        translate = tuple(layer.metadata.get("raw_translate", (0.0,) * ndim))
        return scale, translate

    def _show_points(self, table: pd.DataFrame, suffix: str) -> Any:
        layer = self._source
        scale, translate = self._geometry()
        coords, features = points_from_table(table, scale, translate, with_frames=layer.ndim == 3)
        metadata = {k: v for k, v in layer.metadata.items() if k != OUTPUT_KEY}
        attributes = common_attributes(layer, "postprocess", metadata, layer.ndim)
        attributes["metadata"]["source_layer"] = layer.name
        attributes.update(name=f"{layer.name} {suffix}", features=features,
                          scale=tuple(layer.scale), translate=tuple(layer.translate),
                          size=float(layer.size.mean()) if len(layer.size) else 1.0,
                          border_width=0.0, face_color="magenta",
                          out_of_slice_display=layer.out_of_slice_display)
        return show_layer(self._viewer, (coords, attributes, "points"))

    def _show(self, what: str, result: Any) -> str:
        name = self._source.name
        if what == "drift":
            drift, corrected = result
            self._plot(draw_drift, drift)
            self._show_points(corrected, "drift-corrected")
            self.drift_curve = (drift.drift_nm, name)
            span = drift.drift_nm.max(axis=0) - drift.drift_nm.min(axis=0)
            return (f"Drift range x {span[0]:.1f} nm, y {span[1]:.1f} nm "
                    f"({len(drift.window_frames)} windows); '{name} drift-corrected' added.")
        if what == "merge":
            self._show_points(result, "merged")
            return f"Merged {len(self._source.features)} localizations into {len(result)}."
        if what == "drift image":
            curve_source = self.drift_curve[1] if self.drift_curve else "?"
            show_layer(self._viewer, drift_sum_layer(self._source, result, curve_source))
            return (f"'{name} drift-corrected sum' added (drift of '{curve_source}').")
        if what == "render":
            self._show_image(result)
            return f"Rendered {result.shape[1]} x {result.shape[0]} px at {self.pixel.value} nm."
        self._plot(draw_frc, result)
        value = result.resolution_nm
        return ("FRC resolution: undefined (never below 1/7)" if value != value
                else f"FRC resolution: {value:.1f} nm")

    def _show_image(self, image: Any) -> Any:
        layer = self._source
        scale, translate = self._geometry()
        pixel = float(self.pixel.value)
        factor = tuple(float(s) for s in layer.scale[-2:])
        offset = tuple(float(t) for t in layer.translate[-2:])
        # image pixel c has its centre at (c + 1/2) p nm; the points put nm q at t + q - s/2
        image_translate = tuple(o + f * (t + pixel / 2 - s / 2) for o, f, t, s in
                                zip(offset, factor, translate[-2:], scale[-2:], strict=True))
        metadata = {"pixel_size_nm": pixel, "rendering": self.blur.value}
        attributes = common_attributes(layer, "rendering", metadata, 2)
        attributes.update(name=f"{layer.name} rendered", scale=(pixel * factor[0],
                                                                 pixel * factor[1]),
                          translate=image_translate, contrast_limits=contrast(image, high=99.5),
                          colormap="magma", blending="additive")
        return show_layer(self._viewer, (image, attributes, "image"))

    def _plot(self, draw: Callable[[Figure, DriftResult | FrcResult], Figure], result) -> None:
        draw(self.figure, result)
        self.canvas.draw_idle()
