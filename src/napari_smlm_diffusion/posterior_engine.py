"""The posterior's networks and its sampler: blocks of frames x samples per network call.

For every frame the KDE CNN gives y_hat; the conditional denoiser then draws ``samples`` KDEs
y = y_hat + r / s (s: the card's residual scale). The samples of a block of frames are drawn
together (in smaller batches when the GPU is short of memory), summarised on the device and moved
to the host once (:mod:`posterior_sampling`); only ``keep_samples`` of them and each sample's
peak table are kept. Each sample's noise comes from its own CPU generator seeded by (seed,
frame, sample), so a frame's samples do not depend on the batching, the frame range or the
device's random number generator (the network's float rounding may depend on the batch size).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .calibration import SIGNAL_BLUR_NM, local_signal, pixel_variance
from .camera import Camera
from .denoiser_tiling import denoise_tiled
from .devices import Cancelled, Notify, can_step_down, step_down
from .diffusion import SAMPLERS
from .geometry import fine_pixel_nm
from .model_cards import DenoiserCard, check_pairing
from .models.denoiser import ConditionalDenoiser
from .models.kde_cnn import KDE_MAX
from .pipeline import KdeEngine
from .posterior_sampling import block_generators, summarise_block
from .posterior_settings import PosteriorSettings
from .preprocess import normalize_frames
from .pretrained import load_denoiser, paired_kde_cnn
from .weights import DENOISER_NAME

logger = logging.getLogger(__name__)


@dataclass
class FramePosterior:
    """Posterior of one frame on the 4x grid: ``variance`` is that of the samples,
    ``reported_variance`` its calibrated version (:func:`reported_variance`), shown as std."""

    frame: int
    mean: np.ndarray
    variance: np.ndarray
    reported_variance: np.ndarray
    y_hat: np.ndarray
    kept: np.ndarray
    sample_peaks: list[pd.DataFrame] = field(default_factory=list)


def reported_variance(sample_variance: np.ndarray, mean: np.ndarray, calibration: dict | None,
                      fine_pixel_nm: float) -> np.ndarray:
    """Per-pixel variance reported with the posterior mean (the std map is its square root).

    ``(weight * sample variance + floor) * (local signal + 1e-3) ** exponent`` with
    ``calibration`` (the card's ``pixel_variance_calibration``) = {sample_variance_weight,
    floor, signal_exponent, signal_blur_nm}, fitted on simulated validation data (maximum
    likelihood of the true KDE around the mean, see ``smlm-diffusion calibrate``): the floor
    accounts for molecules that every sample misses, more of them near structure (the local
    signal is the mean blurred by ``signal_blur_nm``, :func:`calibration.local_signal`).
    Without a calibration, the sample variance itself.
    """
    if not calibration:
        return sample_variance
    signal = None
    if calibration.get("signal_exponent", 0.0):
        signal = local_signal(mean, fine_pixel_nm,
                              calibration.get("signal_blur_nm", SIGNAL_BLUR_NM))
    return pixel_variance(calibration, sample_variance, signal).astype(
        sample_variance.dtype)


def _stop_check(should_stop: Callable[[], bool]) -> Callable[[int, int], None]:
    """A sampler step callback that raises ``Cancelled`` once ``should_stop()`` is True."""

    def check(_done: int, _total: int) -> None:
        if should_stop():
            raise Cancelled("cancelled by the user")

    return check


@dataclass
class PosteriorEngine:
    """The KDE CNN and the conditional denoiser, on the KDE engine's device until the denoiser
    runs out of memory there even for one sample: then the denoiser alone moves to the CPU
    (``denoiser_on_cpu``), and the KDE engine, which may be shared, stays where it is."""

    kde: KdeEngine
    denoiser: ConditionalDenoiser
    card: DenoiserCard
    sample_batch: int | None = None  # samples per network call; None: all of a block's samples
    denoiser_on_cpu: bool = False

    @classmethod
    def load(cls, kde_weights: str | None = None, denoiser_weights: str = DENOISER_NAME,
             device: str = "auto", notify: Notify = logger.warning) -> PosteriorEngine:
        """Both networks from verified weights on the resolved device. ``kde_weights`` None:
        the shipped CNN the denoiser was trained with (:func:`pretrained.paired_kde_cnn`); a
        denoiser trained with another KDE CNN is refused (:func:`model_cards.check_pairing`)."""
        if kde_weights is None:
            kde_weights = paired_kde_cnn(denoiser_weights)
        kde = KdeEngine.load(kde_weights, device=device, notify=notify)
        denoiser, card = load_denoiser(denoiser_weights, device=kde.device)
        check_pairing(card, kde.card)
        if kde.device.type == "cpu":  # about 20 % faster convolutions on CPU (measured)
            denoiser = denoiser.to(memory_format=torch.channels_last)
        if card.status:
            notify(f"denoiser weights: {card.status}")
        return cls(kde, denoiser, card)

    @property
    def device(self) -> torch.device:
        """Compute device of the denoiser (that of the KDE engine unless it fell back)."""
        return torch.device("cpu") if self.denoiser_on_cpu else self.kde.device

    def _denoiser_to_cpu(self) -> None:
        """The out-of-memory ladder's last rung: the denoiser continues on the CPU."""
        self.kde.notify(f"out of {self.device.type} memory in the diffusion model even for one "
                        "sample: continuing on the CPU")
        self.denoiser_on_cpu = True
        self.denoiser = self.denoiser.to(self.device)

    def _residuals(self, x: torch.Tensor, cond: torch.Tensor, items: list[int],
                   generators: list, settings: PosteriorSettings,
                   should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Sampled residuals (n, 1, 4 rows, 4 cols), left on the engine's device, of n items in
        one batch: item i is a sample of frame ``items[i]`` of the block, whose normalized frames
        are ``x`` (frames, 1, rows, cols) and CNN estimates ``cond`` (frames, 1, 4 rows,
        4 cols); one generator per item."""
        x, cond = x.to(self.device), cond.to(self.device)
        if len(set(items)) == 1:  # one frame: no copies of it
            x = x[items[0]][None].expand(len(items), -1, -1, -1)
            cond = cond[items[0]][None].expand(len(items), -1, -1, -1)
        else:
            chosen = torch.tensor(items, device=self.device)
            x, cond = x[chosen], cond[chosen]

        def network(y_t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        return denoise_tiled(self.denoiser, y_t, cond, x, log_snr).float()
                return denoise_tiled(self.denoiser, y_t, cond, x, log_snr)

        # A KDE is never negative and the CNN's output is at most KDE_MAX: bound the residual.
        scale = self.card.residual_scale
        bounds = (-scale * cond, scale * (KDE_MAX - cond))
        sampler = SAMPLERS[settings.sampler]
        schedule = (self.card.schedule.steps, self.card.schedule.offset)
        residuals = sampler(network, tuple(cond.shape), generators, self.device,
                            steps=settings.steps, prediction=self.card.prediction,
                            bounds=bounds, schedule=schedule,
                            callback=None if should_stop is None else _stop_check(should_stop))
        return residuals.float()

    def _draw(self, x: torch.Tensor, y_hat: torch.Tensor, frames: Sequence[int],
              settings: PosteriorSettings, should_stop: Callable[[], bool] | None
              ) -> torch.Tensor:
        """Samples (frames, samples, 4 rows, 4 cols) of a block on the engine's device, in
        batches of ``sample_batch`` items; down the out-of-memory ladder with fresh generators
        (those of a failed attempt have drawn)."""
        s = settings.samples
        total = len(frames) * s
        batch = min(self.sample_batch or total, total)
        while True:
            try:
                parts = [self._residuals(
                    x, y_hat, [item // s for item in range(i, min(i + batch, total))],
                    block_generators(settings.seed, frames, s, i, min(i + batch, total)),
                    settings, should_stop) for i in range(0, total, batch)]
                residuals = torch.cat(parts).reshape(len(frames), s, *y_hat.shape[-2:])
                return y_hat.to(residuals.device) + residuals / self.card.residual_scale
            except Exception as error:
                if not can_step_down(error, self.device):
                    raise
                batch = step_down(
                    batch, self.device, self.kde.notify,
                    lambda n: f"out of {self.device.type} memory in the diffusion model: "
                              f"retrying with {n} sample{'s' * (n > 1)} at a time",
                    self._denoiser_to_cpu)
                self.sample_batch = None if self.denoiser_on_cpu else batch

    def sample_frames(self, frames_adu: np.ndarray, frame_indices: Sequence[int], camera: Camera,
                      settings: PosteriorSettings, threshold: float,
                      should_stop: Callable[[], bool] | None = None) -> list[FramePosterior]:
        """Draw ``settings.samples`` KDE samples for each of a block of frames (n, rows, cols).

        The block's samples are drawn together if they fit; when the GPU runs out of memory,
        in smaller batches, then on the CPU (the same samples: each has its own CPU noise
        generator), which ``notify`` says; the engine keeps the smaller batch (or the CPU) for
        the next blocks. Moments and peaks are computed on the device and moved to the host in
        one copy. ``should_stop`` is asked after every network evaluation; ``Cancelled`` is
        raised when it answers True.
        """
        frames_adu = np.asarray(frames_adu)
        indices = [int(i) for i in frame_indices]
        y_hat = self.kde.predict(frames_adu, camera)
        weight = next(self.denoiser.parameters(), None)
        if weight is not None and weight.device.type != self.device.type:
            self.denoiser = self.denoiser.to(self.device)  # the KDE CNN fell back to the CPU
        x = normalize_frames(frames_adu, camera)
        samples = self._draw(x, torch.from_numpy(y_hat)[:, None], indices, settings,
                             should_stop)
        summary = summarise_block(samples, settings.keep_samples, threshold)
        fine = fine_pixel_nm(camera.pixel_size, self.kde.upsampling)
        results = []
        for j, index in enumerate(indices):
            mean, variance = summary.mean[j], summary.variance[j]
            results.append(FramePosterior(
                index, mean, variance,
                reported_variance(variance, mean, self.card.pixel_variance_calibration, fine),
                y_hat[j], summary.kept[j],
                summary.sample_peaks(j, index, settings.samples, fine)))
        return results

    def sample_frame(self, frame_adu: np.ndarray, frame_index: int, camera: Camera,
                     settings: PosteriorSettings, threshold: float,
                     should_stop: Callable[[], bool] | None = None) -> FramePosterior:
        """:meth:`sample_frames` of one frame (rows, cols)."""
        return self.sample_frames(np.asarray(frame_adu)[None], [frame_index], camera, settings,
                                  threshold, should_stop)[0]
