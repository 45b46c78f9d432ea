"""The "KDE CNN" dock widget: run the pretrained KDE CNN over a frame range in a worker thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox, ComboBox, FileEdit, FloatSpinBox, SpinBox

from ...geometry import UPSAMPLING, format_frame_range
from ...pretrained import resolve_weights
from ...weights import KDE_CNN_FAST_NAME, KDE_CNN_NAME, KDE_CNN_V1_NAME
from .job_widget import JobWidget, check_memory
from .jobs import Finished, Job
from .kde_job import KdeRequest, kde_job
from .kde_layers import KDE_NAME, POINTS_NAME, SUM_NAME, remove_layer, result_layers, show_layer
from .result_view import show_results

if TYPE_CHECKING:
    import napari

#: The shipped KDE CNNs offered in the widget: (label, name).
SHIPPED_NETWORKS = [("standard (kde_cnn)", KDE_CNN_NAME),
                    ("fast (kde_cnn_fast)", KDE_CNN_FAST_NAME),
                    ("first release (kde_cnn_v1)", KDE_CNN_V1_NAME)]


class KdeWidget(JobWidget):
    """Run the KDE CNN on an image layer; results appear as layers aligned over it.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    TITLE = "KDE CNN"
    STEP = "batch"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.batch_size = SpinBox(label="Batch size", min=1, max=4096, value=16,
                                  tooltip="Frames per network call; Cancel acts between "
                                  "batches. Smaller batches use less (GPU) memory")
        self.network = ComboBox(
            label="Network", value=KDE_CNN_NAME, choices=SHIPPED_NETWORKS,
            tooltip="Shipped KDE CNN. standard: the most accurate. fast: half the width, "
            "the network 1.8x faster on a CPU, about 2 points of Jaccard index less "
            "(docs/benchmarks.md). first release: narrow training ranges. The posterior "
            "always uses the network its denoiser was trained with")
        self.weights = FileEdit(label="Weights", mode="r", filter="*.safetensors",
                                nullable=True, value=None,
                                tooltip="Empty: the network chosen above. Otherwise a "
                                ".safetensors file with its .json model card next to it")
        self.weights.line_edit.native.setPlaceholderText("the network above")
        self.keep_kdes = CheckBox(text="Keep per-frame KDEs",
                                  tooltip="Also add every frame's KDE as a layer (added hidden; "
                                  "16 x the pixels of the frames, float32)")
        self.threshold = FloatSpinBox(
            label="Threshold", min=0.0, max=4.0, step=0.01, value=0.0,
            tooltip="Detection threshold on the KDE peaks. 0: the model card's for your PSF "
            "width in camera pixels (chosen on validation data). Lower finds dimmer molecules "
            "and more false ones; higher keeps the clear ones")
        self.threshold.native.setSpecialValueText("model card's for the PSF")
        self._arrange(self.batch_size, self.threshold, self.device, self.scheduler,
                      self.model_folder, self.network, self.weights, self.keep_kdes)

    def _make_request(self) -> KdeRequest:
        layer, stack, frames = self._input()
        device = self._device()
        adapted = self._adapted()
        weights = (adapted[0] if adapted else
                   str(self.weights.value) if self.weights.value else self.network.value)
        resolve_weights(weights)
        keep = self.keep_kdes.value and layer.ndim == 3
        if keep:
            check_memory(len(frames) * stack.shape[1] * stack.shape[2] * UPSAMPLING**2 * 4,
                         f"keeping {len(frames)} per-frame KDEs",
                         "untick 'Keep per-frame KDEs' or choose fewer frames")
        camera, psf_sigma_nm = self._camera()
        threshold = float(self.threshold.value) or None
        return KdeRequest(stack, frames, camera, psf_sigma_nm, weights, device,
                          int(self.batch_size.value), keep, self._scheduler(), threshold)

    def _job(self, request: KdeRequest, stop: threading.Event) -> Job:
        return (yield from kde_job(request, stop))

    def _show_result(self, outcome: Finished) -> str:
        request, result = self._request, outcome.result
        psf_px = request.psf_sigma_nm / request.camera.pixel_size
        used = request.threshold or result.card.threshold_for(psf_px)
        origin = "yours" if request.threshold else f"model card, PSF {psf_px:.2g} px"
        metadata: dict[str, Any] = {
            "frames": format_frame_range(result.frames),
            "camera": request.camera.to_dict(), "psf_sigma_nm": request.psf_sigma_nm,
            "model": result.card.name, "model_sha256": result.card.sha256,
            "device": outcome.device, "detection_threshold": used}
        for layer_tuple in result_layers(self._raw, result, UPSAMPLING, metadata):
            show_layer(self._viewer, layer_tuple)
        if result.kdes is None:
            remove_layer(self._viewer, KDE_NAME)
        show_results(self._viewer, self._raw, result.frames.start,
                     (POINTS_NAME, SUM_NAME, KDE_NAME), (POINTS_NAME, SUM_NAME))
        return (f"Done: {len(result.frames)} frames in {outcome.seconds:.1f} s on "
                f"{outcome.device} with {result.card.name}, {len(result.localizations)} "
                f"localizations (threshold {used:.3g}, {origin}).")
