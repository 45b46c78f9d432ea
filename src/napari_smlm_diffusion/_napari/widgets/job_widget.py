"""Base of the dock widgets that run a job over frames of an image layer in a worker thread.

A subclass adds its own input widgets (:meth:`JobWidget._arrange`) and implements
:meth:`~JobWidget._make_request` (gather and check the inputs in the GUI thread),
:meth:`~JobWidget._job` (the generator run by napari's ``thread_worker``, see :mod:`.jobs`) and
:meth:`~JobWidget._show_result`. The base class owns the image-layer choice, the frame range, the
device, the chosen layer's camera (:mod:`.layer_camera`), Run/Cancel, the progress (in the
widget and in the activity dock), notifications, and the consistency rules: one job at a time,
nothing shown after a cancel or when the input layer was removed while the job ran, no
traceback ever reaching the user.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psutil
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    ProgressBar,
    PushButton,
    Widget,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning

from ...camera import Camera
from ...dask_cluster import import_distributed
from ...devices import available_devices, resolve_device
from ...errors import one_line
from ...geometry import format_frame_range, parse_frame_range
from ...pretrained import model_folder_weights
from .jobs import Failed, Finished, Job, Notice, Progress, Stopped, progress_text
from .layer_camera import CAMERA_CHANGED, camera_of, camera_summary, layer_camera
from .layer_choice import input_layer_combo, same_layer
from .settings import get_settings
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

MEMORY_FRACTION = 0.5  # results held in memory may take at most half of the free memory


def check_memory(nbytes: float, what: str, advice: str) -> None:
    """Raise ValueError when ``nbytes`` exceed :data:`MEMORY_FRACTION` of the free memory."""
    free = psutil.virtual_memory().available
    if nbytes > MEMORY_FRACTION * free:
        raise ValueError(f"{what} needs {nbytes / 1e9:.1f} GB but only {free / 1e9:.1f} GB are "
                         f"free; {advice}")


class JobWidget(Container):
    """Common part of the "KDE CNN" and "Diffusion posterior" widgets (see the module docstring).

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    #: Name used in notifications and the progress bar.
    TITLE = ""
    #: What Cancel waits for ("batch", "frame").
    STEP = "batch"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = napari_viewer
        self._settings = get_settings()
        self._worker: Any = None
        self._stop = threading.Event()
        self._raw: Any = None
        self._request: Any = None
        self._progress: progress | None = None
        self._input_removed = False
        self._closed = False
        self.warnings: list[str] = []  # the warnings of the current or last run
        self._line = ("", False)  # the status line without the warnings

        self.layer, self._watcher = input_layer_combo(napari_viewer, "Image layer")
        self.stack_info = text_label("Stack")
        self.frames = LineEdit(label="Frames", tooltip="Frames to process, counted from 1, "
                               "inclusive: A-B (e.g. 1-500), A, or 'all'")
        self.device = ComboBox(label="Device", choices=available_devices(),
                               tooltip=f"'auto' uses {resolve_device('auto').type} here; "
                               "only devices present on this machine are listed")
        self.model_folder = FileEdit(label="Model folder", mode="d", nullable=True, value=None,
                                     tooltip="Empty: the shipped models. Otherwise a folder "
                                     "written by 'Adapt' (kde_cnn.safetensors and "
                                     "denoiser.safetensors with their cards); replaces the "
                                     "weights below")
        self.model_folder.line_edit.native.setPlaceholderText("shipped models")
        self.scheduler = LineEdit(label="Dask scheduler",
                                  tooltip="Empty: run here. Otherwise the address of a "
                                  "dask.distributed scheduler (e.g. tcp://host:8786, or the "
                                  "scheduler_address of a dask-jobqueue SLURMCluster): the "
                                  "frames go to its workers in chunks, each loads the models "
                                  "once, results come back in frame order (as a run here). The "
                                  "workers must read the weights at the same paths; Device is "
                                  "then the workers' device. Needs the [distributed] extra")
        self.scheduler.native.setPlaceholderText("empty: run here")
        self.camera = text_label("Camera", "The chosen layer's camera and PSF; change them in "
                                 "'Camera & PSF'")
        self.run = PushButton(text="Run", tooltip="Process the frames in the background; the "
                              "results appear as layers over the image layer")
        self.cancel = PushButton(text="Cancel", enabled=False,
                                 tooltip=f"Stop after the current {self.STEP}; no layer changes")
        self.bar = ProgressBar(label="Progress", min=0, max=1, value=0,
                               tooltip="Frames processed (moving while the models load)")
        self.status = text_label("", "Progress (frames, seconds per frame, time left) and the "
                                 "outcome of the last run")

    def _arrange(self, *options: Widget) -> None:
        """Place the widgets (``options`` between the frame range and the camera) and connect."""
        buttons = Container(layout="horizontal", labels=False, widgets=[self.run, self.cancel])
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.stack_info, self.frames, *options, self.camera, buttons,
                     self.bar, self.status])
        self.layer.changed.connect(self._on_layer)
        self.run.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self._settings.events.all.connect(self._show_camera)
        CAMERA_CHANGED.connect(self._on_camera_changed)
        self._viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._teardown)
        self._on_layer(self.layer.value)
        self._show_camera()

    # -- to implement -------------------------------------------------------------------------
    def _make_request(self) -> Any:
        """Gather and check the inputs; raise ValueError (or WeightsError...) with a message."""
        raise NotImplementedError

    def _job(self, request: Any, stop: threading.Event) -> Job:
        """The generator run in the worker thread."""
        raise NotImplementedError

    def _show_result(self, outcome: Finished) -> str:
        """Add or update the result layers; return the status line."""
        raise NotImplementedError

    # -- display ------------------------------------------------------------------------------
    def _show_camera(self, _info: Any = None) -> None:
        if self._closed:
            return
        self.camera.value = camera_summary(self.layer.value, self._settings)

    def _on_camera_changed(self, layer: Any) -> None:
        if same_layer(layer, self.layer.value):
            self._show_camera()

    def _say(self, text: str, error: bool = False) -> None:
        """Show ``text`` in the status line, followed by the run's warnings."""
        if self._closed:
            return
        self._line = (text, error)
        show_text(self.status, "\n".join([text, *(f"Warning: {w}" for w in self.warnings)]),
                  error)

    def _fail(self, message: str) -> None:
        """Show an error as a napari notification and in the status line."""
        self._say(message, error=True)
        show_error(f"{self.TITLE}: {message}")

    def _on_layer(self, layer: Any) -> None:
        """Describe the new input, offer all its frames, show its camera."""
        self._show_camera()
        if layer is None:
            self.stack_info.value = "Open an SMLM stack (File > Open, or File > Open Sample)."
            self.frames.value = ""
            return
        shape = tuple(layer.data.shape)
        if len(shape) not in (2, 3):
            self.stack_info.value = f"shape {shape}: not a stack of frames (frames, rows, cols)"
            return
        n = shape[0] if len(shape) == 3 else 1
        self.stack_info.value = f"{n} frame{'s' * (n > 1)} of {shape[-2]} x {shape[-1]} px"
        self.frames.value = self._default_frames(n)

    def _default_frames(self, n_frames: int) -> str:
        """Frames offered when a layer is chosen: all of them."""
        return format_frame_range(range(n_frames))

    # -- inputs -------------------------------------------------------------------------------
    def _input(self) -> tuple[Any, Any, range]:
        """The chosen layer, its data as (frames, rows, cols) and the 0-based frame range."""
        layer = self.layer.value
        if layer is None:
            raise ValueError("choose an image layer (open an SMLM stack first)")
        stack = layer.data
        if stack.ndim == 2:
            stack = stack[None]
        if stack.ndim != 3:
            raise ValueError(f"layer '{layer.name}' has shape {tuple(layer.data.shape)}; "
                             "expected a stack of frames (frames, rows, cols)")
        return layer, stack, parse_frame_range(self.frames.value, stack.shape[0])

    def _camera(self) -> tuple[Camera, float]:
        """The chosen layer's camera and PSF sigma (nm)."""
        values, _ = layer_camera(self.layer.value, self._settings)
        return camera_of(values), values["psf_sigma_nm"]

    def _adapted(self) -> tuple[str, str] | None:
        """(KDE CNN, denoiser) weights of the chosen model folder, or None for the shipped
        models (WeightsError when the folder is not a finished adaptation)."""
        if not self.model_folder.value or str(self.model_folder.value) == ".":
            return None
        kde, denoiser = model_folder_weights(self.model_folder.value)
        return str(kde), str(denoiser)

    def _device(self) -> str:
        """The chosen device ("auto" resolved to what it means here; kept as chosen for a
        dask cluster, whose workers resolve it)."""
        if self._scheduler():
            return str(self.device.value)
        return resolve_device(self.device.value).type

    def _scheduler(self) -> str:
        """The dask scheduler address, "" to run here (InputError when dask.distributed is
        missing)."""
        address = str(self.scheduler.value).strip()
        if address:
            import_distributed()
        return address

    # -- run ----------------------------------------------------------------------------------
    def start(self, _value: Any = None) -> None:
        """Check the inputs and start the job in a worker thread (errors become notifications)."""
        if self._worker is not None:
            return
        self.warnings = []
        try:
            request = self._make_request()
        except (ValueError, RuntimeError, OSError) as exc:  # incl. WeightsError, DeviceError
            self._fail(one_line(exc))
            return
        self._raw, self._request = self.layer.value, request
        self._stop = threading.Event()
        self._input_removed = False
        self._progress = progress(total=len(request.frames),
                                  desc=f"{self.TITLE} on '{self._raw.name}'")
        worker = create_worker(self._job, request, self._stop, _start_thread=False)
        worker.yielded.connect(self._on_message)
        worker.returned.connect(self._on_outcome)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run.enabled, self.cancel.enabled = False, True
        self.bar.max, self.bar.value = 0, 0  # busy until the first frame
        where = f"the dask cluster at {request.scheduler}" if request.scheduler else \
            request.device
        self._say(f"Running frames {format_frame_range(request.frames)} on {where}...")
        worker.start()

    def stop(self, _value: Any = None) -> None:
        """Ask the job to stop after the current batch or frame."""
        if self._worker is not None:
            self._stop.set()
            self._say(f"Cancelling after the current {self.STEP}...")

    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._worker

    def _on_layer_removed(self, event: Any) -> None:
        if self._worker is not None and same_layer(event.value, self._raw):
            self._input_removed = True
            self._stop.set()

    # -- worker messages (GUI thread) ---------------------------------------------------------
    # napari's progress bar and notifications call QApplication.processEvents(), so the later
    # messages of the worker may be handled inside these handlers: each one does its own
    # bookkeeping first and ignores messages that arrive after the job is over.
    def _on_message(self, message: Progress | Notice) -> None:
        if self._worker is None:
            return
        if isinstance(message, Notice):
            self.warnings.append(message.text)
            self._say(*self._line)
            show_warning(f"{self.TITLE}: {message.text}")
            return
        self._say(progress_text(message))
        if message.done:
            self.bar.max, self.bar.value = message.total, message.done
        bar = self._progress
        if bar is not None:
            bar.update(message.done - bar.n)

    def _on_outcome(self, outcome: Finished | Stopped | Failed) -> None:
        if self._input_removed:
            self._fail(f"the input layer '{self._raw.name}' was removed while the job ran; "
                       "no results were added")
        elif isinstance(outcome, Failed):
            self._fail(outcome.message)
        elif isinstance(outcome, Stopped):
            self._say(f"Cancelled after {outcome.done} of {outcome.total} frames; "
                      "no layers were changed.")
        else:
            try:
                self._say(self._show_result(outcome))
            except Exception as exc:  # never let a display problem escape as a traceback
                self._fail(f"could not show the results: {one_line(exc)}")

    def _on_finished(self) -> None:
        bar, self._progress = self._progress, None
        self._worker = self._request = None
        if not self._closed:
            self.run.enabled, self.cancel.enabled = True, False
            self.bar.max = max(self.bar.max, 1)  # not busy any more
        if bar is not None:
            bar.close()

    def _teardown(self, *_args: Any) -> None:
        """The widget is closing: stop a running job and drop all connections."""
        self._closed = True
        self._stop.set()
        self._watcher.close()
        self._settings.events.all.disconnect(self._show_camera, missing_ok=True)
        CAMERA_CHANGED.disconnect(self._on_camera_changed, missing_ok=True)
        self._viewer.layers.events.removed.disconnect(self._on_layer_removed)
