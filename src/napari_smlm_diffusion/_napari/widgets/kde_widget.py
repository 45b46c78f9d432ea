"""The "KDE CNN" dock widget: run the pretrained KDE CNN over a frame range in a worker thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import psutil
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    SpinBox,
)
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning

from ...camera import CameraError
from ...pipeline import available_devices, parse_frame_range, resolve_device
from ...pretrained import WeightsError, resolve_weights
from ...weights import KDE_CNN_NAME
from .kde_job import Failed, Finished, KdeRequest, Notice, Progress, Stopped, kde_job, one_line
from .kde_layers import KDE_NAME, remove_layer, result_layers, show_layer
from .layer_choice import input_layer_combo
from .metadata import values_from_metadata
from .settings import get_settings
from .texts import show_text, text_label

if TYPE_CHECKING:
    import napari

UPSAMPLING = 4
MEMORY_FRACTION = 0.5  # per-frame KDEs may take at most half of the free memory


def _same(a: Any, b: Any) -> bool:
    """Identity of two layers, looking through napari's public-only proxies."""
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


class KdeWidget(Container):
    """Run the KDE CNN on an image layer; results appear as layers aligned over it.

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
        self._raw: Any = None
        self._request: KdeRequest | None = None
        self._progress: progress | None = None
        self._input_removed = False
        self._closed = False

        self.layer, self._watcher = input_layer_combo(napari_viewer, "Image layer")
        self.stack_info = text_label("Stack")
        self.frames = LineEdit(label="Frames", tooltip="Frames to process, counted from 1, "
                               "inclusive: A-B (e.g. 1-500), A, or 'all'")
        self.batch_size = SpinBox(label="Batch size", min=1, max=4096, value=16,
                                  tooltip="Frames per network call; Cancel acts between "
                                  "batches. Smaller batches use less (GPU) memory")
        self.device = ComboBox(label="Device", choices=available_devices(),
                               tooltip=f"'auto' uses {resolve_device('auto').type} here; "
                               "only devices present on this machine are listed")
        self.weights = FileEdit(label="Weights", mode="r", filter="*.safetensors",
                                nullable=True, value=None,
                                tooltip="Empty: the shipped KDE CNN. Otherwise a .safetensors "
                                "file with its .json model card next to it")
        self.weights.line_edit.native.setPlaceholderText(f"shipped ({KDE_CNN_NAME})")
        self.keep_kdes = CheckBox(text="Keep per-frame KDEs",
                                  tooltip="Also add every frame's KDE as a layer (added hidden; "
                                  "16 x the pixels of the frames, float32)")
        self.camera = text_label("Camera", "Set in the 'Camera & PSF' widget")
        self.run = PushButton(text="Run")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.status = text_label("")
        buttons = Container(layout="horizontal", labels=False, widgets=[self.run, self.cancel])
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.layer, self.stack_info, self.frames, self.batch_size, self.device,
                     self.weights, self.keep_kdes, self.camera, buttons, self.status])

        self.layer.changed.connect(self._on_layer)
        self.run.changed.connect(self.start)
        self.cancel.changed.connect(self.stop)
        self._settings.events.all.connect(self._show_camera)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        self.native.destroyed.connect(self._teardown)
        self._on_layer(self.layer.value)
        self._show_camera()

    # -- display ------------------------------------------------------------------------------
    def _show_camera(self, _info: Any = None) -> None:
        if self._closed:
            return
        self.camera.value = self._settings.summary()

    def _say(self, text: str, error: bool = False) -> None:
        if self._closed:
            return
        show_text(self.status, text, error)

    def _fail(self, message: str) -> None:
        """Show an error as a napari notification and in the status line."""
        self._say(message, error=True)
        show_error(f"KDE CNN: {message}")

    def _on_layer(self, layer: Any) -> None:
        """Describe the new input, offer all its frames, adopt its camera metadata if any."""
        if layer is None:
            self.stack_info.value = "Open an SMLM stack (File > Open, or File > Open Sample)."
            return
        shape = tuple(layer.data.shape)
        if len(shape) not in (2, 3):
            self.stack_info.value = f"shape {shape}: not a stack of frames (frames, rows, cols)"
            return
        n = shape[0] if len(shape) == 3 else 1
        self.stack_info.value = f"{n} frame{'s' * (n > 1)} of {shape[-2]} x {shape[-1]} px"
        self.frames.value = f"1-{n}"
        values = values_from_metadata(layer.metadata)
        if values:
            try:
                self._settings.apply(values, f"layer '{layer.name}' metadata")
            except CameraError as exc:
                self._say(f"Layer '{layer.name}' metadata: {exc}", error=True)

    # -- run ----------------------------------------------------------------------------------
    def _make_request(self) -> KdeRequest:
        """Gather and check the inputs; raise ValueError/WeightsError/DeviceError with a message."""
        layer = self.layer.value
        if layer is None:
            raise ValueError("choose an image layer (open an SMLM stack first)")
        if self._settings.error:
            raise ValueError(f"fix the camera settings first: {self._settings.error}")
        stack = layer.data
        if stack.ndim == 2:
            stack = stack[None]
        if stack.ndim != 3:
            raise ValueError(f"layer '{layer.name}' has shape {tuple(layer.data.shape)}; "
                             "expected a stack of frames (frames, rows, cols)")
        frames = parse_frame_range(self.frames.value, stack.shape[0])
        device = resolve_device(self.device.value).type  # "auto" -> what it means here
        weights = str(self.weights.value) if self.weights.value else KDE_CNN_NAME
        resolve_weights(weights)
        keep = self.keep_kdes.value and layer.ndim == 3
        if keep:
            needed = len(frames) * stack.shape[1] * stack.shape[2] * UPSAMPLING**2 * 4
            free = psutil.virtual_memory().available
            if needed > MEMORY_FRACTION * free:
                raise ValueError(f"keeping {len(frames)} per-frame KDEs needs "
                                 f"{needed / 1e9:.1f} GB but only {free / 1e9:.1f} GB are free; "
                                 "untick 'Keep per-frame KDEs' or choose fewer frames")
        return KdeRequest(stack, frames, self._settings.camera(), self._settings.psf_sigma_nm,
                          weights, device, int(self.batch_size.value), keep)

    def start(self, _value: Any = None) -> None:
        """Check the inputs and start the job in a worker thread (errors become notifications)."""
        if self._worker is not None:
            return
        try:
            request = self._make_request()
        except (ValueError, WeightsError, RuntimeError) as exc:
            self._fail(one_line(exc))
            return
        self._raw, self._request = self.layer.value, request
        self._stop = threading.Event()
        self._input_removed = False
        self._progress = progress(total=len(request.frames),
                                  desc=f"KDE CNN on '{self._raw.name}'")
        worker = create_worker(kde_job, request, self._stop, _start_thread=False)
        worker.yielded.connect(self._on_message)
        worker.returned.connect(self._on_outcome)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        self.run.enabled, self.cancel.enabled = False, True
        first, last = request.frames.start + 1, request.frames.stop
        self._say(f"Running frames {first}-{last} on {request.device}...")
        worker.start()

    def stop(self, _value: Any = None) -> None:
        """Ask the job to stop after the current batch."""
        if self._worker is not None:
            self._stop.set()
            self._say("Cancelling after the current batch...")

    @property
    def worker(self) -> Any:
        """The running worker, or None."""
        return self._worker

    def _on_layer_removed(self, event: Any) -> None:
        if self._worker is not None and _same(event.value, self._raw):
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
            show_warning(f"KDE CNN: {message.text}")
            return
        self._say(message.text or f"{message.done} / {message.total} frames")
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
            self._show_result(outcome)

    def _show_result(self, outcome: Finished) -> None:
        request, result = self._request, outcome.result
        try:
            metadata = {"frames": f"{result.frames.start + 1}-{result.frames.stop}",
                        "camera": request.camera.to_dict(),
                        "psf_sigma_nm": request.psf_sigma_nm,
                        "model": str(result.card.get("name", request.weights)),
                        "model_sha256": str(result.card.get("sha256", "")),
                        "device": outcome.device}
            for layer_tuple in result_layers(self._raw, result, UPSAMPLING, metadata):
                show_layer(self._viewer, layer_tuple)
            if result.kdes is None:
                remove_layer(self._viewer, KDE_NAME)
        except Exception as exc:  # never let a display problem escape as a traceback
            self._fail(f"could not show the results: {one_line(exc)}")
            return
        self._say(f"Done: {len(result.frames)} frames in {outcome.seconds:.1f} s on "
                  f"{outcome.device}, {len(result.localizations)} localizations.")

    def _on_finished(self) -> None:
        bar, self._progress = self._progress, None
        self._worker = self._request = None
        if not self._closed:
            self.run.enabled, self.cancel.enabled = True, False
        if bar is not None:
            bar.close()

    def _teardown(self, *_args: Any) -> None:
        """The widget is closing: stop a running job and drop all connections."""
        self._closed = True
        self._stop.set()
        self._watcher.close()
        self._settings.events.all.disconnect(self._show_camera, missing_ok=True)
        self._viewer.layers.events.removed.disconnect(self._on_layer_removed)
