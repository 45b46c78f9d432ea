"""Diffusion posterior per frame: samples, streaming mean and variance, localization uncertainty.

For every frame the KDE CNN gives y_hat; the conditional denoiser then draws ``samples`` KDEs
y = y_hat + r / s (s: the card's residual scale). A frame's samples are drawn together (in
batches when the GPU is short of memory) and summarised by their mean and variance; only
``keep_samples`` of them and each sample's peak table are kept. Each sample's noise
comes from its own CPU generator seeded by (seed, frame, sample), so a frame's posterior does not
depend on how samples are batched, on the frame range or on the device's random number generator.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .calibration import SIGNAL_BLUR_NM, local_signal, molecule_sigma, pixel_variance
from .camera import Camera
from .denoiser_tiling import denoise_tiled
from .devices import Cancelled, Notify, can_step_down, step_down
from .diffusion import SAMPLERS, RunningMoments
from .errors import InputError
from .frames import FrameChecks, check_frame_size
from .geometry import check_frame_range, fine_pixel_nm, psf_sigma_or_default
from .kde import find_peaks
from .localize import localizations_from_kde
from .matching import match_points
from .model_cards import DenoiserCard, check_pairing
from .models.denoiser import ConditionalDenoiser
from .models.kde_cnn import KDE_MAX
from .pipeline import KdeEngine
from .posterior_settings import PosteriorSettings
from .preprocess import normalize_frames
from .pretrained import load_denoiser
from .weights import DENOISER_NAME, KDE_CNN_NAME

MATCH_RADIUS_CAMERA_PX = 1.0  # a molecule's peak in a sample is at most this far away
LOCAL_DENSITY_RADIUS_NM = 1000.0

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


def sample_generators(seed: int, frame: int, samples: int | range) -> list[torch.Generator]:
    """Fresh CPU generators for samples ``samples`` (a count: 0..samples-1) of a frame, sample k
    seeded from ``SeedSequence([seed, frame, k])``: sample k of frame f is the same whatever the
    frame range, the batching of samples (on a GPU short of memory) or the device. A generator
    that has drawn is spent: a retried sample needs a new one."""
    ks = range(samples) if isinstance(samples, int) else samples
    states = [np.random.SeedSequence([int(seed), int(frame), k]).generate_state(1, np.uint64)[0]
              for k in ks]
    return [torch.Generator().manual_seed(int(state) >> 1) for state in states]


@dataclass
class PosteriorEngine:
    """The KDE CNN and the conditional denoiser, on the KDE engine's device until the denoiser
    runs out of memory there even for one sample: then the denoiser alone moves to the CPU
    (``denoiser_on_cpu``), and the KDE engine, which may be shared, stays where it is."""

    kde: KdeEngine
    denoiser: ConditionalDenoiser
    card: DenoiserCard
    sample_batch: int | None = None  # samples per network call; None: all of a frame's samples
    denoiser_on_cpu: bool = False

    @classmethod
    def load(cls, kde_weights: str = KDE_CNN_NAME, denoiser_weights: str = DENOISER_NAME,
             device: str = "auto", notify: Notify = logger.warning) -> PosteriorEngine:
        """Both networks from verified weights on the resolved device; a denoiser trained with
        another KDE CNN is refused (:func:`model_cards.check_pairing`)."""
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

    def _residuals(self, frame_adu: np.ndarray, y_hat: np.ndarray, generators: list,
                   camera: Camera, settings: PosteriorSettings,
                   should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """Sampled residuals (len(generators), 4 rows, 4 cols) of one frame, in one batch on the
        engine's device."""
        x = normalize_frames(frame_adu[None], camera).to(self.device)
        cond = torch.from_numpy(y_hat)[None, None].to(self.device)
        n = len(generators)
        x_rep, cond_rep = x.expand(n, -1, -1, -1), cond.expand(n, -1, -1, -1)

        def network(y_t: torch.Tensor, log_snr: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                if self.device.type == "cuda":
                    with torch.autocast("cuda", dtype=torch.float16):
                        return denoise_tiled(self.denoiser, y_t, cond_rep, x_rep,
                                             log_snr).float()
                return denoise_tiled(self.denoiser, y_t, cond_rep, x_rep, log_snr)

        # A KDE is never negative and the CNN's output is at most KDE_MAX: bound the residual.
        scale = self.card.residual_scale
        bounds = (-scale * cond, scale * (KDE_MAX - cond))
        sampler = SAMPLERS[settings.sampler]
        schedule = (self.card.schedule.steps, self.card.schedule.offset)
        residuals = sampler(network, (n, 1, *y_hat.shape), generators, self.device,
                            steps=settings.steps, prediction=self.card.prediction,
                            bounds=bounds, schedule=schedule,
                            callback=None if should_stop is None else _stop_check(should_stop))
        return residuals[:, 0].float().cpu().numpy()

    def sample_frame(self, frame_adu: np.ndarray, frame_index: int, camera: Camera,
                     settings: PosteriorSettings, threshold: float,
                     should_stop: Callable[[], bool] | None = None) -> FramePosterior:
        """Draw ``settings.samples`` KDE samples for one frame (all in one batch if they fit).

        When the GPU runs out of memory, the samples are drawn in smaller batches, then on the
        CPU (the same samples: each has its own CPU noise generator), which ``notify`` says; the
        engine keeps the smaller batch (or the CPU) for the next frames. ``should_stop`` is asked
        after every network evaluation; ``Cancelled`` is raised when it answers True.
        """
        y_hat = self.kde.predict(frame_adu[None], camera)[0]
        weight = next(self.denoiser.parameters(), None)
        if weight is not None and weight.device.type != self.device.type:
            self.denoiser = self.denoiser.to(self.device)  # the KDE CNN fell back to the CPU
        n = settings.samples
        batch = min(self.sample_batch or n, n)
        while True:
            try:  # fresh generators on every attempt: those of a failed attempt have drawn
                residuals = np.concatenate([
                    self._residuals(frame_adu, y_hat, sample_generators(
                        settings.seed, frame_index, range(i, min(i + batch, n))), camera,
                        settings, should_stop) for i in range(0, n, batch)])
                break
            except Exception as error:
                if not can_step_down(error, self.device):
                    raise
                batch = step_down(
                    batch, self.device, self.kde.notify,
                    lambda n: f"out of {self.device.type} memory in the diffusion model: "
                              f"retrying with {n} sample{'s' * (n > 1)} at a time",
                    self._denoiser_to_cpu)
                self.sample_batch = None if self.denoiser_on_cpu else batch
        samples = y_hat[None] + residuals / self.card.residual_scale
        moments = RunningMoments()
        peaks = []
        fine = fine_pixel_nm(camera.pixel_size, self.kde.upsampling)
        for sample in samples:
            moments.add(sample)
            peaks.append(find_peaks(sample, fine, threshold, frame=frame_index))
        mean, variance = moments.mean.astype(np.float32), moments.variance.astype(np.float32)
        return FramePosterior(frame_index, mean, variance,
                              reported_variance(variance, mean,
                                                self.card.pixel_variance_calibration, fine),
                              y_hat,
                              samples[:settings.keep_samples].astype(np.float32), peaks)


def _stop_check(should_stop: Callable[[], bool]) -> Callable[[int, int], None]:
    """A sampler step callback that raises ``Cancelled`` once ``should_stop()`` is True."""

    def check(_done: int, _total: int) -> None:
        if should_stop():
            raise Cancelled("cancelled by the user")

    return check


def posterior_uncertainty(mean_table: pd.DataFrame, sample_peaks: list[pd.DataFrame],
                          radius_nm: float) -> pd.DataFrame:
    """Per-localization spread over samples and detection probability.

    Each molecule detected on the posterior mean is looked up in every sample: the molecules and
    the sample's peaks are paired one to one (Hungarian assignment on distance, pairs at most
    ``radius_nm`` apart), so that a neighbour's peak is never counted twice. The per-axis standard
    deviation of a molecule's positions over samples is returned as ``posterior_std_x_nm`` and
    ``posterior_std_y_nm`` (NaN where it was found in fewer than 2 samples); the fraction of
    samples in which it was found is its ``detection_probability``.
    """
    table = mean_table.copy()
    n = len(table)
    positions = np.full((len(sample_peaks), n, 2), np.nan)
    centres = table[["x_nm", "y_nm"]].to_numpy()
    for k, peaks in enumerate(sample_peaks):
        if n == 0 or peaks.empty:
            continue
        points = peaks[["x_nm", "y_nm"]].to_numpy()
        rows, cols = match_points(centres, points, radius_nm)
        positions[k, rows] = points[cols]
    counts = (~np.isnan(positions[:, :, 0])).sum(axis=0)
    spread = np.full((n, 2), np.nan)
    enough = counts >= 2
    if np.any(enough):
        with warnings.catch_warnings():  # all-NaN columns of molecules seen once stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            spread[enough] = np.nanstd(positions[:, enough], axis=0, ddof=1)
    table["posterior_std_x_nm"] = spread[:, 0]
    table["posterior_std_y_nm"] = spread[:, 1]
    table["detection_probability"] = counts / max(len(sample_peaks), 1)
    return table


def local_density(table: pd.DataFrame, radius_nm: float = LOCAL_DENSITY_RADIUS_NM) -> np.ndarray:
    """Molecules per um^2 within ``radius_nm`` of each molecule of one frame (itself included)."""
    points = table[["x_nm", "y_nm"]].to_numpy()
    if len(points) == 0:
        return np.zeros(0)
    distance = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    return (distance <= radius_nm).sum(axis=1) / (np.pi * (radius_nm / 1000.0) ** 2)


def reported_uncertainty(table: pd.DataFrame, model: dict | None) -> pd.DataFrame:
    """The per-axis uncertainty reported for each molecule of one frame.

    ``sigma^2 = crlb^2 + (a spread^2 + b crlb^2 + floor^2) (1 + density)^k`` per axis
    (:func:`calibration.molecule_sigma`), with the spread of the molecule over the samples (0
    where it was found in fewer than 2), its Cramer-Rao bound on the raw frame (the
    information-matrix precision, neighbours included) and its local density in um^-2
    (:func:`local_density`). The CRLB is a hard lower bound. The parameters
    ``model`` (the card's ``uncertainty_model``) are fitted on simulated validation data by
    ``smlm-diffusion calibrate``; without them the CRLB and the spread are added in quadrature.
    The CRLB is read from ``uncertainty_x_nm`` / ``uncertainty_y_nm``, kept as ``crlb_x_nm`` /
    ``crlb_y_nm``, and the reported uncertainty written in its place.
    """
    model = model or {}
    table = table.copy()
    table["local_density_um2"] = local_density(table)
    for axis in ("x", "y"):
        crlb = table[f"uncertainty_{axis}_nm"].to_numpy()
        table[f"crlb_{axis}_nm"] = crlb
        table[f"uncertainty_{axis}_nm"] = molecule_sigma(
            model, table[f"posterior_std_{axis}_nm"].to_numpy(), crlb,
            table["local_density_um2"].to_numpy())
    table["uncertainty_nm"] = np.sqrt(0.5 * (table["uncertainty_x_nm"] ** 2
                                             + table["uncertainty_y_nm"] ** 2))
    return table


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


@dataclass
class PosteriorBatch:
    """Posterior of the frames of one step, with their localizations."""

    frames: list[FramePosterior]
    localizations: pd.DataFrame


def localize_posterior(result: FramePosterior, frame_adu: np.ndarray, camera: Camera,
                       engine: PosteriorEngine, psf_sigma_nm: float | None = None,
                       threshold: float | None = None) -> pd.DataFrame:
    """Localizations of one frame's posterior with their reported uncertainty.

    Molecules are the peaks of the posterior mean above ``threshold`` (default: the model card's
    ``posterior_mean_threshold``, chosen on validation data, else the CNN's threshold), with
    photometry and information-matrix precision on the raw frame; their spread over the samples,
    detection probability and reported uncertainty follow (:func:`posterior_uncertainty`,
    :func:`reported_uncertainty`).
    """
    if threshold is None:
        threshold = engine.card.posterior_mean_threshold
    sigma_nm = psf_sigma_or_default(psf_sigma_nm, camera.pixel_size)
    table = localizations_from_kde(result.mean, camera.adu_to_photons(frame_adu), result.frame,
                                   camera, sigma_nm, threshold, engine.kde.upsampling)
    spread = posterior_uncertainty(table, result.sample_peaks,
                                   MATCH_RADIUS_CAMERA_PX * camera.pixel_size)
    return reported_uncertainty(spread, engine.card.uncertainty_model)


def iter_posterior(
    stack: Sequence | np.ndarray,
    camera: Camera,
    engine: PosteriorEngine,
    frames: range,
    settings: PosteriorSettings,
    psf_sigma_nm: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[PosteriorBatch]:
    """Posterior frame by frame over ``frames`` of a (lazy) stack.

    ``should_stop`` is asked before every frame and after every network evaluation; when it
    answers True, ``Cancelled`` is raised (within one sampler step).
    """
    sample_threshold = engine.card.detection_threshold
    check_frame_range(frames, len(stack))
    checks = FrameChecks(camera, engine.kde.notify)
    for index in frames:
        frame = np.asarray(stack[index])
        if index == frames.start:
            check_frame_size(frame.shape, psf_sigma_or_default(psf_sigma_nm, camera.pixel_size),
                             camera.pixel_size)
        checks(frame[None], np.array([index]))
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
        result = engine.sample_frame(frame, index, camera, settings, sample_threshold,
                                     should_stop)
        yield PosteriorBatch([result], localize_posterior(result, frame, camera, engine,
                                                          psf_sigma_nm))


@dataclass
class PosteriorResult:
    """Per-frame posterior maps of a frame range, their sums over frames and the localizations.

    ``sum_mean`` is the super-resolution image (sum of the frames' posterior means) and
    ``sum_variance`` its variance (sum of the frames' variances: frames are independent given
    the sample).
    """

    means: np.ndarray
    stds: np.ndarray
    samples: np.ndarray | None
    sum_mean: np.ndarray
    sum_variance: np.ndarray
    localizations: pd.DataFrame
    frames: range


def _frame_arrays(shape: tuple[int, ...], storage_dir: Path | None, name: str) -> np.ndarray:
    """float32 array for per-frame maps: in memory, or memory-mapped in ``storage_dir``."""
    if storage_dir is None:
        return np.zeros(shape, np.float32)
    return np.lib.format.open_memmap(Path(storage_dir) / f"{name}.npy", mode="w+",
                                     dtype=np.float32, shape=shape)


def run_posterior(
    stack: Sequence | np.ndarray,
    camera: Camera,
    engine: PosteriorEngine,
    frames: range,
    settings: PosteriorSettings,
    psf_sigma_nm: float | None = None,
    progress=None,
    should_stop=None,
    storage_dir: str | Path | None = None,
) -> PosteriorResult:
    """Posterior mean, std and kept samples for each frame of ``frames``, their sums over frames,
    and the localization table. Raises ``Cancelled`` on stop.

    Per-frame maps are held in memory, or with ``storage_dir`` memory-mapped in files there, so
    that memory does not grow with the number of frames (the caller removes the folder).
    """
    means = stds = kept = sum_mean = sum_variance = None
    tables = []
    batches = iter_posterior(stack, camera, engine, frames, settings, psf_sigma_nm, should_stop)
    for done, batch in enumerate(batches):
        result = batch.frames[0]
        if means is None:  # allocated from the first frame's grid, which checked the range
            fine = result.mean.shape
            means = _frame_arrays((len(frames), *fine), storage_dir, "mean")
            stds = _frame_arrays((len(frames), *fine), storage_dir, "std")
            kept = (_frame_arrays((len(frames), settings.keep_samples, *fine), storage_dir,
                                  "samples") if settings.keep_samples else None)
            sum_mean, sum_variance = np.zeros(fine, np.float64), np.zeros(fine, np.float64)
        means[done], stds[done] = result.mean, np.sqrt(result.reported_variance)
        if kept is not None:
            kept[done] = result.kept
        sum_mean += result.mean
        sum_variance += result.reported_variance
        tables.append(batch.localizations)
        if progress is not None:
            progress(done + 1, len(frames))
    if means is None:
        raise InputError("no frames to sample: the frame range is empty")
    return PosteriorResult(means, stds, kept, sum_mean.astype(np.float32),
                           sum_variance.astype(np.float32),
                           pd.concat(tables, ignore_index=True), frames)
