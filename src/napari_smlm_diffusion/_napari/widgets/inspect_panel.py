""""Inspect data" in the Camera & PSF tab: estimates from the chosen layer's frames next to its
camera values; the user accepts them or not.

"Inspect data" runs :func:`napari_smlm_diffusion.inspection.inspect_stack` in a worker thread
(up to 200 frames spread over the stack) and compares the estimates with the layer's camera and
the KDE CNN's training ranges (:func:`~napari_smlm_diffusion.inspection.check_settings`). The
warnings appear as napari notifications and under the table, and the camera fields they concern
get an orange border and a "!" (updated whenever the layer's camera changes). "Accept" sets the
proposed baseline, sensitivity, read noise (only when the data measured it) and PSF sigma on the
layer's camera; nothing is applied without that click. The report is kept in the layer's
metadata (:data:`INSPECTION_KEY`) for "Adapt models". Cancel cannot interrupt the inspection
itself (a second or so on 200 frames of 64 x 64 pixels): its result is discarded and the
buttons come back when it ends.
"""

from __future__ import annotations

import html
import threading
import time
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning

from ...camera import Camera
from ...inspection import InspectionReport, check_settings, inspect_stack, training_ranges
from .jobs import Failed, Finished, Job, Progress, Stopped, guarded
from .layer_camera import CAMERA_CHANGED, camera_of
from .layer_choice import same_layer
from .texts import show_text, text_label

if TYPE_CHECKING:
    from .camera_widget import CameraWidget

#: Key in ``layer.metadata`` holding the last inspection report (``InspectionReport.to_dict``).
INSPECTION_KEY = "smlm_inspection"
#: Warning text (start of a warning of ``check_settings``) -> camera field it concerns.
WARNED_FIELDS = (("camera sensitivity", "sensitivity"), ("camera baseline", "baseline"),
                 ("PSF sigma", "psf_sigma_nm"), ("pixel size", "pixel_size"))
#: Rows of the table: (label, report key, camera field or None, format).
ROWS = (("Baseline (ADU)", "baseline_adu", "baseline", "{:.1f}"),
        ("Sensitivity (e-/ADU)", "sensitivity_e_per_adu", "sensitivity", "{:.3g}"),
        ("Read noise (e- rms)", "read_noise_e", "read_noise", "{:.2g}"),
        ("PSF sigma (nm)", "psf_sigma_nm", "psf_sigma_nm", "{:.0f}"),
        ("Photons per spot (median)", "photons_median", None, "{:.0f}"),
        ("Background (photons/px)", "background_median_photons", None, "{:.1f}"),
        ("Density (spots/um² per frame)", "density_per_um2", None, "{:.2f}"))
INFO_WARNINGS = {"photons_median": "median photons", "background_median_photons": "background"}
MARK_STYLE = "border: 2px solid #ffa500;"


def inspect_job(stack: Any, camera: Camera, psf_sigma_nm: float, stop: threading.Event) -> Job:
    """Inspect ``stack`` and compare with the settings: Finished(report with its warnings)."""
    def job() -> Job:
        started = time.perf_counter()
        yield Progress(0, 1, "inspecting up to 200 frames spread over the stack...")
        report = inspect_stack(stack, camera)
        if stop.is_set():
            return Stopped(0, 1)
        ranges = training_ranges()
        report.warnings = check_settings(report, camera, psf_sigma_nm, ranges)
        return Finished((report, ranges), "cpu", time.perf_counter() - started)
    return (yield from guarded(job(), "inspection"))


def proposal(report: InspectionReport) -> dict[str, float]:
    """Camera values proposed by ``report`` (read noise only when the data measured it)."""
    values = {"baseline": round(report.baseline_adu, 1),
              "sensitivity": round(report.sensitivity_e_per_adu, 3),
              "psf_sigma_nm": round(report.psf_sigma_nm, 1)}
    if report.read_noise_from_data:
        values["read_noise"] = round(report.read_noise_e, 2)
    return values


def warned_fields(warnings: list[str]) -> set[str]:
    """Camera fields named by ``warnings`` (see :data:`WARNED_FIELDS`)."""
    return {field for text, field in WARNED_FIELDS
            if any(warning.startswith(text) for warning in warnings)}


class InspectPanel(Container):
    """The "Inspect data" part of the Camera & PSF tab (see the module docstring).

    Parameters
    ----------
    camera : CameraWidget
        The tab: its layer choice, fields and the layer's camera.
    """

    def __init__(self, camera: CameraWidget) -> None:
        super().__init__(labels=False)
        self.margins = (0, 0, 0, 0)
        self._camera = camera
        self._worker: Any = None
        self._stop = threading.Event()
        self._layer: Any = None
        self._report: InspectionReport | None = None
        self._ranges: dict = {}
        self.warnings: list[str] = []
        self.inspect = PushButton(text="Inspect data", tooltip="Estimate baseline (ADU), "
                                  "sensitivity (e-/ADU), read noise (e-), PSF sigma (nm), "
                                  "photons, background and density from up to 200 frames")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Discard the running inspection (it ends by itself)")
        self.accept = PushButton(text="Accept", enabled=False,
                                 tooltip="Set the proposed baseline, sensitivity, read noise and "
                                 "PSF sigma on the chosen layer's camera")
        self.table = text_label("", "Current values and the estimates from the data with their "
                                "standard errors; '!' marks what a warning is about")
        self.message = text_label("")
        buttons = Container(layout="horizontal", labels=False,
                            widgets=[self.inspect, self.cancel, self.accept])
        buttons.margins = (0, 0, 0, 0)
        self.extend([buttons, self.table, self.message])
        self.inspect.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.accept.changed.connect(self.apply)
        camera.layer.changed.connect(self._forget)
        CAMERA_CHANGED.connect(self._on_camera_changed)
        self.native.destroyed.connect(self._teardown)

    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._worker

    @property
    def report(self) -> InspectionReport | None:
        """The last inspection of the chosen layer, or None."""
        return self._report

    # -- run ------------------------------------------------------------------------------------
    def start(self, _value: Any = None) -> None:
        """Inspect the chosen layer in a worker thread."""
        layer = self._camera.layer.value
        if self._worker is not None:
            return
        if layer is None:
            self._say("Open an image stack first.", error=True)
            return
        self._forget()
        values, _ = self._camera.current()
        self._layer, self._stop = layer, threading.Event()
        worker = create_worker(inspect_job, layer.data, camera_of(values),
                               values["psf_sigma_nm"], self._stop, _start_thread=False)
        worker.yielded.connect(lambda message: self._say(message.text))
        worker.returned.connect(self._on_outcome)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.inspect.enabled, self.cancel.enabled = False, True
        worker.start()

    def stop(self, _value: Any = None) -> None:
        """Discard the running inspection."""
        if self._worker is not None:
            self._stop.set()
            self._say("Cancelled: the result will be discarded.")

    def _on_outcome(self, outcome: Finished | Stopped | Failed) -> None:
        layer = self._layer
        if isinstance(outcome, Failed):
            self._say(f"Cannot inspect: {outcome.message}", error=True)
            show_error(f"Inspect data: {outcome.message}")
        elif isinstance(outcome, Stopped) or self._stop.is_set():
            self._say("Inspection cancelled; nothing changed.")
        elif not same_layer(layer, self._camera.layer.value):
            self._say(f"Layer '{layer.name}' is no longer chosen; inspection discarded.")
        else:
            self._report, self._ranges = outcome.result
            layer.metadata[INSPECTION_KEY] = self._report.to_dict()
            self._refresh()
            for warning in self.warnings:
                show_warning(f"Inspect data: {warning}")
            self.accept.enabled = True

    def _on_finished(self) -> None:
        self._worker = None
        try:
            self.inspect.enabled, self.cancel.enabled = True, False
        except RuntimeError:  # the widget is gone
            pass

    # -- show and accept ------------------------------------------------------------------------
    def _refresh(self) -> None:
        """The table, the warnings and the marks for the report and the current camera."""
        report = self._report
        values, _ = self._camera.current()
        self.warnings = check_settings(report, camera_of(values), values["psf_sigma_nm"],
                                       self._ranges)
        marked = warned_fields(self.warnings)
        self._camera.mark(marked)
        rows = ["<tr><th align=left>Quantity</th><th align=right>Current</th>"
                "<th align=right>&nbsp;&nbsp;From the data</th></tr>"]
        for label, key, field, fmt in ROWS:
            value, error = report.estimate(key)
            estimate = f"{fmt.format(value)} ± {error:.2g}"
            if key == "read_noise_e" and not report.read_noise_from_data:
                estimate = "not measurable"
            warned = field in marked or (key in INFO_WARNINGS and any(
                INFO_WARNINGS[key] in w and "trained on" in w for w in self.warnings))
            current = f"{values[field]:g}" if field else ""
            rows.append(f"<tr><td>{'! ' * warned}{html.escape(label)}</td>"
                        f"<td align=right>{current}</td><td align=right>{estimate}</td></tr>")
        notes = "".join(f"<p>Note: {html.escape(note)}.</p>" for note in report.notes)
        self.table.value = f"<table cellspacing=4>{''.join(rows)}</table>{notes}"
        spots = (f"{report.n_frames} frames, {report.n_isolated_spots} isolated spots")
        if self.warnings:
            self._say(f"{spots}. Warnings:\n" + "\n".join(f"! {w}" for w in self.warnings),
                      error=True)
        else:
            self._say(f"{spots}: the camera values agree with the data.")

    def apply(self, _value: Any = None) -> None:
        """Set the proposed values on the inspected layer's camera."""
        if self._report is None:
            return
        self._camera.apply_values(proposal(self._report),
                                  f"accepted from the inspection of '{self._layer.name}'")

    def _on_camera_changed(self, layer: Any) -> None:
        if self._report is not None and same_layer(layer, self._layer):
            self._refresh()

    def _forget(self, _value: Any = None) -> None:
        """Drop the shown report (another layer was chosen, or a new inspection starts)."""
        self._report, self.warnings = None, []
        self.accept.enabled = False
        self.table.value = ""
        self._say("")
        self._camera.mark(set())

    def _say(self, text: str, error: bool = False) -> None:
        show_text(self.message, text, error)

    def _teardown(self, *_args: Any) -> None:
        self._stop.set()
        CAMERA_CHANGED.disconnect(self._on_camera_changed, missing_ok=True)
