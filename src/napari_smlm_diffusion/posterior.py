"""Diffusion posterior of a frame range: per-frame posteriors, localizations with their
uncertainty, and the per-frame maps gathered.

The networks and the sampler live in :mod:`posterior_engine` (blocks of frames x samples per
network call, summaries on the device) and :mod:`posterior_sampling` (seeded noise, the device
summary); their public names are re-exported here.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .calibration import molecule_sigma
from .camera import Camera
from .devices import Cancelled
from .errors import InputError
from .frames import FrameChecks, check_frame_size, frame_chunks
from .geometry import check_frame_range, psf_sigma_or_default
from .localize import localizations_from_kde
from .matching import match_points
from .posterior_engine import FramePosterior, PosteriorEngine, reported_variance
from .posterior_sampling import frames_per_block, sample_generators
from .posterior_settings import PosteriorSettings

__all__ = ["FramePosterior", "FrameSums", "PosteriorBatch", "PosteriorEngine", "PosteriorResult",
           "PosteriorSettings", "iter_posterior", "local_density", "localize_posterior",
           "posterior_block", "posterior_uncertainty", "reported_uncertainty",
           "reported_variance", "run_posterior", "sample_generators"]

MATCH_RADIUS_CAMERA_PX = 1.0  # a molecule's peak in a sample is at most this far away
LOCAL_DENSITY_RADIUS_NM = 1000.0



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

    ``sigma^2 = crlb^2 + (a spread^2 + b crlb^2 + floor^2) (1 + density)^k peak^-q
    detection^-d`` per axis (:func:`calibration.molecule_sigma`), with the spread of the
    molecule over the samples (0 where it was found in fewer than 2), its Cramer-Rao bound on the
    raw frame (the information-matrix precision, neighbours included), its local density in
    um^-2 (:func:`local_density`), the height of its peak in the posterior mean (``score``) and
    the share of the samples that found it (``detection_probability``). The
    CRLB is a hard lower bound. The parameters ``model`` (the card's ``uncertainty_model``) are
    fitted on simulated validation data by ``smlm-diffusion calibrate``; without them the CRLB
    and the spread are added in quadrature. The CRLB is read from ``uncertainty_x_nm`` /
    ``uncertainty_y_nm``, kept as ``crlb_x_nm`` / ``crlb_y_nm``, and the reported uncertainty
    written in its place.
    """
    table = table.assign(local_density_um2=local_density(table),
                         crlb_x_nm=table["uncertainty_x_nm"], crlb_y_nm=table["uncertainty_y_nm"])
    return with_uncertainty_model(table, model)


def with_uncertainty_model(table: pd.DataFrame, model: dict | None) -> pd.DataFrame:
    """``table`` (with the columns :func:`reported_uncertainty` adds) with its per-axis and
    combined uncertainties computed by ``model`` from ``crlb_x_nm`` / ``crlb_y_nm``, the spread,
    ``local_density_um2`` (per frame), ``score`` and ``detection_probability``: the same
    molecules under another uncertainty model."""
    peak_height = table["score"].to_numpy() if "score" in table else None
    detection = (table["detection_probability"].to_numpy()
                 if "detection_probability" in table else None)
    sigma = {f"uncertainty_{axis}_nm": molecule_sigma(
        model or {}, table[f"posterior_std_{axis}_nm"].to_numpy(),
        table[f"crlb_{axis}_nm"].to_numpy(), table["local_density_um2"].to_numpy(),
        peak_height, detection) for axis in ("x", "y")}
    return table.assign(**sigma, uncertainty_nm=np.sqrt(
        0.5 * (sigma["uncertainty_x_nm"] ** 2 + sigma["uncertainty_y_nm"] ** 2)))


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
    block_frames: int | None = None,
) -> Iterator[PosteriorBatch]:
    """Posterior over ``frames`` of a (lazy) stack: one :class:`PosteriorBatch` per frame, in
    order.

    Frames are sampled in blocks of ``block_frames`` counted from the start of ``frames``
    (default: as many as fill one network call, :func:`posterior_sampling.frames_per_block`).
    ``should_stop`` is asked before every block, after every network evaluation and before
    every frame is localized; when it answers True, ``Cancelled`` is raised (within one sampler
    step).
    """
    check_frame_range(frames, len(stack))
    if len(frames) == 0:
        return
    first = np.asarray(stack[frames[0]])
    check_frame_size(first.shape, psf_sigma_or_default(psf_sigma_nm, camera.pixel_size),
                     camera.pixel_size)
    block = block_frames or frames_per_block(settings.samples, first.shape[-2:], engine.device)
    for indices, data in frame_chunks(stack, frames, block,
                                      FrameChecks(camera, engine.kde.notify)):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
        yield from posterior_block(engine, data, indices, camera, settings, psf_sigma_nm,
                                   should_stop)


def posterior_block(engine: PosteriorEngine, data: np.ndarray, indices: Sequence[int],
                    camera: Camera, settings: PosteriorSettings,
                    psf_sigma_nm: float | None = None,
                    should_stop: Callable[[], bool] | None = None) -> Iterator[PosteriorBatch]:
    """The posterior of one block of frames ``data`` (frames ``indices`` of the stack), frame by
    frame with its localizations (``should_stop`` as in :func:`iter_posterior`)."""
    results = engine.sample_frames(data, indices, camera, settings,
                                   engine.card.detection_threshold, should_stop)
    for result, frame in zip(results, data, strict=True):
        if should_stop is not None and should_stop():
            raise Cancelled("cancelled by the user")
        yield PosteriorBatch([result], localize_posterior(result, frame, camera, engine,
                                                          psf_sigma_nm))


@dataclass
class FrameSums:
    """Running sums over frames of the posterior mean (the super-resolution image) and of the
    calibrated variance (its variance: frames are independent given the sample)."""

    mean: np.ndarray | None = None
    variance: np.ndarray | None = None

    def add(self, result: FramePosterior) -> None:
        """Add one frame's mean and reported (calibrated) variance."""
        if self.mean is None or self.variance is None:
            self.mean = np.zeros(result.mean.shape, np.float64)
            self.variance = np.zeros(result.mean.shape, np.float64)
        self.mean += result.mean
        self.variance += result.reported_variance

    def std(self) -> np.ndarray:
        """Standard deviation of the summed image (float32)."""
        return np.sqrt(np.maximum(self.variance, 0.0)).astype(np.float32)


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
    means = stds = kept = None
    sums, tables = FrameSums(), []
    batches = iter_posterior(stack, camera, engine, frames, settings, psf_sigma_nm, should_stop)
    for done, batch in enumerate(batches):
        result = batch.frames[0]
        if means is None:  # allocated from the first frame's grid, which checked the range
            fine = result.mean.shape
            means = _frame_arrays((len(frames), *fine), storage_dir, "mean")
            stds = _frame_arrays((len(frames), *fine), storage_dir, "std")
            kept = (_frame_arrays((len(frames), settings.keep_samples, *fine), storage_dir,
                                  "samples") if settings.keep_samples else None)
        means[done], stds[done] = result.mean, np.sqrt(result.reported_variance)
        if kept is not None:
            kept[done] = result.kept
        sums.add(result)
        tables.append(batch.localizations)
        if progress is not None:
            progress(done + 1, len(frames))
    if means is None:
        raise InputError("no frames to sample: the frame range is empty")
    return PosteriorResult(means, stds, kept, sums.mean.astype(np.float32),
                           sums.variance.astype(np.float32),
                           pd.concat(tables, ignore_index=True), frames)
