"""The "Diffusion posterior" dock widget: sample the posterior of chosen frames in a worker thread.

For every frame the KDE CNN gives an estimate and the conditional denoiser draws samples of the
super-resolved KDE around it; the widget shows their mean, the calibrated per-pixel standard
deviation, some of the samples and the localizations of the mean with a per-molecule uncertainty
(a calibrated combination of the spread over samples and the information-matrix precision,
scaled by the local density) and detection probability (fraction of samples in which the
molecule appears).
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, FileEdit, SpinBox

from ...devices import resolve_device
from ...frames import check_frame_size
from ...geometry import UPSAMPLING, fine_shape, format_frame_range
from ...posterior_settings import DEFAULT_POSTERIOR, SAMPLER_NAMES, PosteriorSettings
from ...pretrained import resolve_weights
from ...weights import DENOISER_NAME, KDE_CNN_NAME
from .job_widget import JobWidget, check_memory
from .jobs import Finished, Job
from .outputs import remove_layer, show_layer
from .posterior_job import PosteriorMaps, PosteriorRequest, posterior_job
from .posterior_layers import (
    MEAN_NAME,
    POINTS_NAME,
    SAMPLES_NAME,
    STACKING,
    result_layers,
    uncertainty_limits,
)
from .result_view import show_results

if TYPE_CHECKING:
    import napari

#: Samplers offered, fastest first.
SEED_MAX = 2**31 - 1
#: Frames offered by default without a GPU (about 2-5 s per frame with 8 samples on a CPU).
CPU_DEFAULT_FRAMES = 10


class PosteriorWidget(JobWidget):
    """Sample the diffusion posterior of an image layer's frames; results appear as layers
    aligned over it.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    TITLE = "Diffusion posterior"
    STEP = "frame"

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(napari_viewer)
        self.samples = SpinBox(label="Samples", min=1, max=1024, value=DEFAULT_POSTERIOR.samples,
                               tooltip="Posterior samples per frame: more give smoother mean "
                               "and std maps (time grows linearly)")
        self.steps = SpinBox(label="Steps", min=1, max=1000, value=DEFAULT_POSTERIOR.steps,
                             tooltip="Network evaluations per sample: DPM-Solver and DDIM "
                             "need 10-50, DDPM (the reference sampler) about 100")
        self.sampler = ComboBox(label="Sampler",
                                choices=list(SAMPLER_NAMES),
                                tooltip="dpm-solver: DPM-Solver++(2M), fastest; ddim: "
                                "deterministic DDIM; ddpm: ancestral DDPM (slow reference)")
        self.seed = SpinBox(label="Seed", min=0, max=SEED_MAX, value=0,
                            tooltip="Random seed: a frame's samples depend only on the seed "
                            "and the frame, not on the frame range or the device")
        self.keep = SpinBox(label="Samples to keep", min=0, max=1024, value=4,
                            tooltip="How many of each frame's samples to show as the "
                            "'Posterior samples' layer (its own slider); 0 for none")
        self.weights = FileEdit(label="Denoiser", mode="r", filter="*.safetensors",
                                nullable=True, value=None,
                                tooltip="Empty: the shipped denoiser. Otherwise a .safetensors "
                                "file with its .json model card next to it")
        self.weights.line_edit.native.setPlaceholderText(f"shipped ({DENOISER_NAME})")
        self._arrange(self.samples, self.steps, self.sampler, self.seed, self.keep, self.device,
                      self.scheduler, self.model_folder, self.weights)

    def _default_frames(self, n_frames: int) -> str:
        """All frames on a GPU; the first :data:`CPU_DEFAULT_FRAMES` on a CPU."""
        if resolve_device("auto").type == "cpu":
            return format_frame_range(range(min(n_frames, CPU_DEFAULT_FRAMES)))
        return format_frame_range(range(n_frames))

    def _make_request(self) -> PosteriorRequest:
        _, stack, frames = self._input()
        if self.keep.value > self.samples.value:
            raise ValueError(f"'Samples to keep' ({self.keep.value}) cannot exceed 'Samples' "
                             f"({self.samples.value})")
        settings = PosteriorSettings(samples=int(self.samples.value), steps=int(self.steps.value),
                                     sampler=str(self.sampler.value), seed=int(self.seed.value),
                                     keep_samples=int(self.keep.value))
        camera, psf_sigma_nm = self._camera()
        check_frame_size(stack.shape, psf_sigma_nm, camera.pixel_size)
        device = self._device()
        adapted = self._adapted()
        kde, weights = adapted or (None, str(self.weights.value) if self.weights.value
                                   else DENOISER_NAME)
        resolve_weights(weights)
        resolve_weights(kde or KDE_CNN_NAME)
        fine_pixels = math.prod(fine_shape(stack.shape[1:], UPSAMPLING))
        check_memory(len(frames) * fine_pixels * 4 * (2 + settings.keep_samples),
                     f"the posterior maps of {len(frames)} frames",
                     "choose fewer frames or keep fewer samples")
        return PosteriorRequest(stack, frames, camera, psf_sigma_nm, weights, device, settings,
                                kde, self._scheduler())

    def _job(self, request: PosteriorRequest, stop: threading.Event) -> Job:
        return (yield from posterior_job(request, stop))

    def _show_result(self, outcome: Finished) -> str:
        request = self._request
        result: PosteriorMaps = outcome.result
        card, settings = result.card, request.settings
        metadata: dict[str, Any] = {
            "frames": format_frame_range(result.frames),
            "camera": request.camera.to_dict(), "psf_sigma_nm": request.psf_sigma_nm,
            "model": card.name, "model_sha256": card.sha256, "device": outcome.device,
            "samples": settings.samples, "steps": settings.steps, "sampler": settings.sampler,
            "seed": settings.seed}
        if card.status:
            metadata["model_status"] = card.status
        for layer_tuple in result_layers(self._raw, result, request.camera.pixel_size,
                                         metadata):
            show_layer(self._viewer, layer_tuple)
        if result.samples is None:
            remove_layer(self._viewer, SAMPLES_NAME)
        show_results(self._viewer, self._raw, result.frames.start, STACKING,
                     (POINTS_NAME, MEAN_NAME))
        n = len(result.frames)
        text = (f"Done: {n} frame{'s' * (n > 1)} x {settings.samples} samples in "
                f"{outcome.seconds:.1f} s on {outcome.device}, {len(result.localizations)} "
                "localizations.")
        limits = uncertainty_limits(result.localizations)
        if limits is not None:
            text += (f" Colour: uncertainty {limits[0]:.0f} (dark blue) to {limits[1]:.0f} nm "
                     "(yellow); hollow: found in fewer than 2 samples.")
        return f"{text}\n{result.uncertainty_check}"
