"""The "Adapt" tab: fine-tune both models for the chosen layer's microscope, in a worker thread.

The setup is the layer's camera and PSF (Camera & PSF tab) with the photons, background and
density of its last inspection ("Inspect data"), or measured by inspecting the stack first.
:func:`napari_smlm_diffusion.adapt.adapt_models` then writes ``kde_cnn.safetensors`` and
``denoiser.safetensors`` with their cards into the chosen folder; the KDE CNN and Posterior tabs
use them through their "Model folder" field. Last, the posterior of the generic and of the
adapted models runs on 32 frames from the middle of the stack, and the label-free check of
both is shown in the log (:mod:`napari_smlm_diffusion.adapt_stack_check`).

Cancel: ``adapt_models`` reports through a callback (every ~10 s during training, at every
validation and calibration step); after Cancel the callback raises, which stops the run at that
point. Everything written so far is complete (checkpoints, finished stages and the cards are
written atomically), so "Adapt" with the same folder and setup resumes from the last checkpoint.
The loss curve is read from the training logs (``kde-run/log.jsonl``,
``denoiser-run/log.jsonl``) while the run goes on: one point per validation.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, SpinBox
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ...adapt import (
    DEFAULT_DENOISER_STEPS,
    DEFAULT_KDE_STEPS,
    DEFAULT_OBJECTIVE,
    DENOISER_RUN,
    KDE_RUN,
    OBJECTIVES,
    STATE_FILE,
    adapt_models,
    efficiency_advice,
    measure_setup,
)
from ...adapt_stack_check import StackExcerpt
from ...devices import Cancelled
from ...training_log import LOG_NAME, training_log
from .inspect_panel import INSPECTION_KEY
from .jobs import Failed, Finished, Job, Progress, Stopped, guarded
from .layer_camera import camera_of, camera_summary, layer_camera
from .layer_choice import input_layer_combo
from .settings import get_settings
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

RUNS = (("KDE CNN", KDE_RUN), ("denoiser", DENOISER_RUN))
MEASURED = {"photons": "photons_median", "background": "background_median_photons",
            "density": "density_per_um2"}
POLL_MS = 1000
#: Axis label of the KDE CNN's validation score, by what selects its best weights.
SCORE_LABELS = {"jaccard": "CNN validation\nJaccard 100 nm (%)",
                "efficiency": "CNN validation\nefficiency"}
OBJECTIVE_LABELS = {"jaccard": "more molecules found (Jaccard)",
                    "efficiency": "found and well placed (efficiency)"}


def default_folder(layer: Any) -> Path:
    """``<stack name>_adapted`` next to the layer's file (the working directory without one)."""
    source = getattr(getattr(layer, "source", None), "path", None)
    if source:
        return Path(source).with_name(f"{Path(source).stem}_adapted")
    return Path.cwd() / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer.name)}_adapted"


def adapt_job(stack: Any, setup: dict, out: Path, steps: tuple[int, int, int], objective: str,
              messages: deque, stop: threading.Event) -> Job:
    """Measure what the setup lacks (photons, background, density) on ``stack``, then adapt the
    models into ``out``; Stopped when cancelled (see the module docstring)."""
    def report(text: str) -> None:
        if stop.is_set():
            raise Cancelled("adaptation cancelled")
        messages.append(text)

    def job() -> Job:
        started = time.perf_counter()
        if any(setup[key] is None for key in MEASURED):
            yield Progress(0, 1, "measuring photons, background and density on the stack...")
        measured = measure_setup(stack, **setup, report=messages.append)
        yield Progress(0, 1, "adapting the models...")
        try:
            folder = adapt_models(measured, out, kde_steps=steps[0],
                                  denoiser_steps=steps[1], calibration_frames=steps[2],
                                  objective=objective, report=report,
                                  own_frames=StackExcerpt.middle(stack))
        except Cancelled:
            return Stopped(0, 1)
        return Finished(folder, "auto", time.perf_counter() - started)
    return (yield from guarded(job(), "adapt"))


class AdaptWidget(Container):
    """Adapt the models to the chosen layer's microscope (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._settings = get_settings()
        self._worker: Any = None
        self._stop = threading.Event()
        self._messages: deque[str] = deque()
        self._drawn: tuple = ()
        self._out: Path | None = None
        self.layer, self._watcher = input_layer_combo(napari_viewer, "Image layer")
        self.folder = FileEdit(label="Model folder", mode="d",
                               tooltip="Folder for the adapted models (kde_cnn.safetensors, "
                               "denoiser.safetensors and their cards); an interrupted "
                               "adaptation in this folder is resumed")
        self.kde_steps = SpinBox(label="KDE CNN steps", min=1, max=10**6, value=DEFAULT_KDE_STEPS,
                                 tooltip="Fine-tuning steps of the KDE CNN (training steps)")
        self.denoiser_steps = SpinBox(label="Denoiser steps", min=1, max=10**6,
                                      value=DEFAULT_DENOISER_STEPS,
                                      tooltip="Fine-tuning steps of the denoiser (training "
                                      "steps)")
        self.objective = ComboBox(label="Keep the fine-tuned CNN if",
                                  choices=[(OBJECTIVE_LABELS[o], o) for o in OBJECTIVES],
                                  value=DEFAULT_OBJECTIVE,
                                  tooltip="What the fine-tuned KDE CNN must improve on the "
                                  "simulated validation sets to replace the generic one: the "
                                  "molecules found within 100 nm (Jaccard index), or the "
                                  "molecules found and how well they are placed (the SMLM "
                                  "challenge's efficiency, which also weighs the RMSE)")
        self.calibration_frames = SpinBox(label="Calibration frames", min=1, max=10**4,
                                          value=16, tooltip="Simulated frames per density for "
                                          "the recalibration of the uncertainties")
        self.setup = text_label("Setup", "What the models are adapted to: the layer's camera "
                                "and PSF, photons, background and density")
        self.run = PushButton(text="Adapt models to this data",
                              tooltip="Fine-tune the KDE CNN and the denoiser on simulations of "
                              "this setup and recalibrate (tens of minutes on a CPU)")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip="Stop at the next progress report (within about 10 s "
                                 "of training); run again with the same folder to resume")
        self.status = text_label("", "Progress of the adaptation and its outcome")
        self.figure = Figure(figsize=(4, 4.5), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.figure.text(0.5, 0.5, "The training curves appear here\nwhile the models adapt",
                         ha="center", va="center", color="0.5")
        buttons = Container(layout="horizontal", labels=False, widgets=[self.run, self.cancel])
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.folder, self.kde_steps, self.denoiser_steps,
                     self.objective, self.calibration_frames, self.setup, buttons, self.status])
        self.native.layout().addWidget(self.canvas)
        self._timer = QTimer(self.native)  # stopped and deleted with the widget
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self.layer.changed.connect(self._on_layer)
        self.run.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self.native.destroyed.connect(self._teardown)
        self._on_layer(self.layer.value)

    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._worker

    # -- setup ----------------------------------------------------------------------------------
    def set_active(self, active: bool) -> None:
        """Show the current setup when the tab is shown (the camera or inspection may have
        changed in Camera & PSF)."""
        if active:
            self._show_setup()

    def _on_layer(self, layer: Any = None) -> None:
        if layer is not None:
            self.folder.value = default_folder(layer)
        self._show_setup()

    def setup_values(self) -> dict:
        """Camera and PSF of the chosen layer; photons, background and density of its last
        inspection (None: measured when the adaptation starts)."""
        layer = self.layer.value
        if layer is None:
            raise ValueError("choose an image layer (open an SMLM stack first)")
        values, _ = layer_camera(layer, self._settings)
        inspected = layer.metadata.get(INSPECTION_KEY) or {}
        return {"camera": camera_of(values), "psf_sigma_nm": values["psf_sigma_nm"],
                **{key: inspected.get(name) for key, name in MEASURED.items()}}

    def _show_setup(self) -> None:
        layer = self.layer.value
        if layer is None:
            self.setup.value = "Open an SMLM stack first."
            return
        values = self.setup_values()
        measured = ("photons {photons:.0f}, background {background:.1f} photons/px, density "
                    "{density:.2f} /um² (from 'Inspect data')".format(**values)
                    if values["photons"] is not None else
                    "photons, background and density: measured on the stack first (or run "
                    "'Inspect data' in Camera & PSF)")
        self.setup.value = f"{camera_summary(layer, self._settings)}; {measured}"

    # -- run ------------------------------------------------------------------------------------
    def start(self, _value: Any = None) -> None:
        """Adapt the models in a worker thread."""
        if self._worker is not None:
            return
        self._show_setup()
        try:
            setup = self.setup_values()
            if str(self.folder.value or "") in ("", "."):
                raise ValueError("choose a folder for the adapted models")
            out = Path(self.folder.value)
        except ValueError as exc:
            self._fail(str(exc))
            return
        resuming = (out / STATE_FILE).is_file()
        self._stop, self._messages, self._drawn = threading.Event(), deque(), ()
        steps = (int(self.kde_steps.value), int(self.denoiser_steps.value),
                 int(self.calibration_frames.value))
        worker = create_worker(adapt_job, self.layer.value.data, setup, out, steps,
                               self.objective.value, self._messages, self._stop,
                               _start_thread=False)
        worker.yielded.connect(lambda message: self._say(message.text))
        worker.returned.connect(self._on_outcome)
        worker.finished.connect(self._on_finished)
        self._worker, self._out = worker, out
        self.run.enabled, self.cancel.enabled = False, True
        self._say(f"{'Resuming' if resuming else 'Starting'} the adaptation in {out}...")
        self._timer.start()
        worker.start()

    def stop(self, _value: Any = None) -> None:
        """Stop at the next progress report (the folder can be resumed)."""
        if self._worker is not None:
            self._stop.set()
            self._say("Cancelling at the next progress report...")

    def _poll(self) -> None:
        """Show the latest progress message and redraw the curves when the logs grew."""
        if self._messages:
            last = None
            while self._messages:
                last = self._messages.popleft()
            if not self._stop.is_set():
                self._say(last)
        self.plot_logs(self._out)

    def plot_logs(self, out: Path) -> None:
        """Training loss of both runs, the KDE CNN's validation score and the denoiser's
        validation loss against the step (redrawn only when the logs changed)."""
        logs = {name: training_log(out / run / LOG_NAME) for name, run in RUNS}
        key = tuple(len(entries) for entries in logs.values())
        if key == self._drawn:
            return
        self._drawn = key
        self.figure.clear()
        loss, cnn, denoiser = self.figure.subplots(3, 1, sharex=False)
        for name, entries in logs.items():
            if entries:
                loss.plot([e["step"] for e in entries], [e["loss"] for e in entries], "o-",
                          label=name)
        validation = {"KDE CNN": (cnn, "score"), "denoiser": (denoiser, "validation_loss")}
        for colour, (name, (axes, column)) in enumerate(validation.items()):
            entries = logs[name]
            axes.plot([e["step"] for e in entries],
                      [e.get(column, float("nan")) for e in entries], "o-", color=f"C{colour}")
        selection = next((e["selection"] for e in logs["KDE CNN"] if "selection" in e),
                         "efficiency")
        loss.set_ylabel("training loss")
        cnn.set_ylabel(SCORE_LABELS[selection])
        denoiser.set_ylabel("denoiser\nvalidation loss")
        denoiser.set_xlabel("step")
        if loss.lines:
            loss.legend(fontsize="small")
        self.canvas.draw_idle()

    def _on_outcome(self, outcome: Finished | Stopped | Failed) -> None:
        self._poll()
        if isinstance(outcome, Failed):
            self._fail(outcome.message)
        elif isinstance(outcome, Stopped):
            self._say(f"Cancelled; run again with the folder {self._out} to resume.")
        else:
            advice = efficiency_advice(self._out, self.objective.value)
            self._say(f"Adapted models written to {outcome.result} in "
                      f"{outcome.seconds / 60:.1f} min: choose this folder as 'Model folder' "
                      "in the KDE CNN and Posterior tabs."
                      + ("" if advice is None else f"\nNote: {advice}."))

    def _on_finished(self) -> None:
        self._worker = None
        try:
            self._timer.stop()
            self.run.enabled, self.cancel.enabled = True, False
        except RuntimeError:  # the widget is gone
            pass

    def _say(self, text: str, error: bool = False) -> None:
        show_text(self.status, text, error)

    def _fail(self, message: str) -> None:
        self._say(message, error=True)
        show_error(f"Adapt: {message}")

    def _teardown(self, *_args: Any) -> None:
        self._stop.set()
        self._watcher.close()
