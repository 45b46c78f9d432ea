"""napari-free engine: stack -> batches (and tiles) -> KDE CNN -> localizations.

The GUI, the CLI and the tests all drive :func:`iter_kde` (a generator of per-batch results) or
:func:`run_kde` (which aggregates it). Frames are read batch by batch from the (lazy) stack, so
memory does not grow with the stack length unless per-frame KDEs are kept on purpose.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from .camera import Camera
from .devices import Cancelled, Notify, can_step_down, resolve_device, step_down
from .errors import InputError
from .frames import FrameChecks, check_frame_size, frame_chunks
from .geometry import check_frame_range, psf_sigma_or_default
from .localize import localizations_from_kdes
from .model_cards import KdeCnnCard
from .models.kde_cnn import InferenceKdeCnn, KdeCnn
from .preprocess import normalize_frames
from .pretrained import load_kde_cnn
from .tiling import tiles
from .weights import KDE_CNN_NAME

RECEPTIVE_MARGIN_PX = 24  # > receptive-field radius of the KDE CNN, so tiles stitch exactly
MAX_TILE_PX = 512
#: Frames per network call on the CPU: larger calls are not faster there (see the throughput
#: benchmark) and their activations (~6 MB per 64x64 frame) set the peak memory.
CPU_FORWARD_BATCH = 8

logger = logging.getLogger(__name__)


T = TypeVar("T")
R = TypeVar("R")
Progress = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


@dataclass
class KdeEngine:
    """The KDE CNN on a device, with batching, tiling and out-of-memory fallback. ``model`` is a
    :class:`KdeCnn` or, as :meth:`load` gives it, its faster :class:`InferenceKdeCnn`."""

    model: KdeCnn | InferenceKdeCnn
    card: KdeCnnCard
    device: torch.device
    notify: Notify = logger.warning
    #: The user's detection threshold (``--threshold``); ``None``: the card's for the PSF width.
    threshold: float | None = None

    @classmethod
    def load(cls, weights: str = KDE_CNN_NAME, device: str = "auto",
             notify: Notify = logger.warning) -> KdeEngine:
        """Load verified weights on the resolved device, rearranged for inference."""
        target = resolve_device(device)
        trained, card = load_kde_cnn(weights, device=target)
        model = InferenceKdeCnn(trained)
        if target.type == "cpu":
            model = model.to(memory_format=torch.channels_last)
        return cls(model, card, target, notify)

    def threshold_for(self, psf_sigma_px: float | None) -> float:
        """Detection threshold on the KDE: the user's, else the card's for a PSF of
        ``psf_sigma_px`` camera pixels (chosen on validation data per PSF width)."""
        return self.threshold if self.threshold is not None else \
            self.card.threshold_for(psf_sigma_px)

    @property
    def upsampling(self) -> int:
        """KDE grid factor."""
        return self.card.upsampling

    def _forward(self, inputs: torch.Tensor) -> torch.Tensor:
        inputs = inputs.to(self.device)
        if self.device.type == "cpu":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    return self.model(inputs).float()
            return self.model(inputs)

    def _predict_tiled(self, inputs: torch.Tensor) -> np.ndarray:
        n, _, rows, cols = inputs.shape
        u = self.upsampling
        out = np.empty((n, rows * u, cols * u), dtype=np.float32)
        for r0, r1, kr0, kr1 in tiles(rows, MAX_TILE_PX, RECEPTIVE_MARGIN_PX):
            for c0, c1, kc0, kc1 in tiles(cols, MAX_TILE_PX, RECEPTIVE_MARGIN_PX):
                result = self._forward(inputs[:, :, r0:r1, c0:c1])[:, 0].cpu().numpy()
                out[:, kr0 * u:kr1 * u, kc0 * u:kc1 * u] = result[
                    :, (kr0 - r0) * u:(kr1 - r0) * u, (kc0 - c0) * u:(kc1 - c0) * u
                ]
        return out

    def leaves_a_core_free(self) -> bool:
        """Whether the network leaves a CPU core free for other work: it runs on a GPU, or on
        fewer CPU threads than there are cores. (Measured: localizing in parallel with the CNN
        is then faster; with the CNN on all cores it is not.)"""
        return self.device.type != "cpu" or torch.get_num_threads() < (os.cpu_count() or 1)

    def fall_back_to_cpu(self, reason: str) -> None:
        """Move the network to the CPU and say why through ``notify``."""
        self.notify(f"{reason}: continuing on the CPU")
        self.device = torch.device("cpu")
        self.model = self.model.to(self.device)

    def predict(self, frames_adu: np.ndarray, camera: Camera) -> np.ndarray:
        """KDEs (n, rows*4, cols*4) of frames in ADU. Falls back to smaller batches, then to the
        CPU, when the device runs out of memory, and says so through ``notify``."""
        inputs = normalize_frames(frames_adu, camera)
        batch = len(inputs) if self.device.type != "cpu" else min(len(inputs), CPU_FORWARD_BATCH)
        while True:
            try:
                return np.concatenate([self._predict_tiled(inputs[i:i + batch])
                                       for i in range(0, len(inputs), batch)])
            except Exception as error:
                if not can_step_down(error, self.device):
                    raise
                batch = step_down(
                    batch, self.device, self.notify,
                    lambda n: f"out of {self.device.type} memory: retrying with batch {n}",
                    lambda: self.fall_back_to_cpu(
                        f"out of {self.device.type} memory even for one frame"))


@dataclass
class KdeBatch:
    """Result of one batch: frame indices (0-based), KDEs and localizations. ``summed``: the
    sum of the batch's KDEs when ``kdes`` were not kept (then empty; runs on a dask cluster
    send only the sum)."""

    frames: np.ndarray
    kdes: np.ndarray
    localizations: pd.DataFrame
    summed: np.ndarray | None = None

    def kde_sum(self) -> np.ndarray:
        """The sum of the batch's KDEs (rows*4, cols*4)."""
        return self.kdes.sum(axis=0) if self.summed is None else self.summed


#: ``source(frames, batch_size)``: the batches (:class:`KdeBatch`) of a frame range in order,
#: of ``batch_size`` frames counted from its start (:func:`iter_kde` here,
#: :func:`kde_distributed.distributed_kde_source` on a dask cluster).
KdeSource = Callable[[range, int], Iterator[KdeBatch]]


def check_kde_input(stack: Sequence | np.ndarray, camera: Camera, frames: range | None,
                    batch_size: int, psf_sigma_nm: float | None) -> tuple[range, float]:
    """The frame range (default: all) and the PSF sigma (nm) of a KDE run, or InputError."""
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    shape = tuple(stack.shape)
    if len(shape) != 3:
        raise InputError(f"expected a stack of frames (frames, rows, cols), got shape {shape}")
    frames = range(shape[0]) if frames is None else frames
    check_frame_range(frames, shape[0])
    sigma_nm = psf_sigma_or_default(psf_sigma_nm, camera.pixel_size)
    check_frame_size(shape, sigma_nm, camera.pixel_size)
    return frames, sigma_nm


def localized_batch(engine: KdeEngine, camera: Camera, sigma_nm: float, refine: bool,
                    indices: np.ndarray, block: np.ndarray, kdes: np.ndarray) -> KdeBatch:
    """The batch of frames ``indices`` (ADU ``block``, KDEs ``kdes``) with its localizations."""
    table = localizations_from_kdes(kdes, camera.adu_to_photons(block), indices, camera,
                                    sigma_nm, engine.threshold_for(sigma_nm / camera.pixel_size),
                                    engine.upsampling, refine)
    return KdeBatch(indices, kdes, table)


def iter_kde(
    stack: Sequence | np.ndarray,
    camera: Camera,
    engine: KdeEngine,
    frames: range | None = None,
    batch_size: int = 32,
    psf_sigma_nm: float | None = None,
    localize: bool = True,
    refine: bool = False,
) -> Iterator[KdeBatch]:
    """Run the CNN over ``frames`` of a (lazy) stack, batch by batch.

    ``localize`` adds the localization table of each frame (positions from the KDE peaks);
    ``refine`` also fits all detections of a frame jointly on the raw data (see :mod:`refine`).
    When the CNN leaves a CPU core free (:meth:`KdeEngine.leaves_a_core_free`), batches are
    localized in a worker thread while the CNN runs on the next batch (at most one batch waits;
    batches come in order; errors of either step are raised here).
    Frames smaller than the PSF support raise InputError; frames entirely at or below the
    camera baseline, or with saturated pixels, are reported (once) through ``engine.notify``.
    """
    frames, sigma_nm = check_kde_input(stack, camera, frames, batch_size, psf_sigma_nm)

    def predicted() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for indices, block in frame_chunks(stack, frames, batch_size,
                                           FrameChecks(camera, engine.notify)):
            yield indices, block, engine.predict(block, camera)

    if not localize:
        for indices, _, kdes in predicted():
            yield KdeBatch(indices, kdes, pd.DataFrame())
        return

    def localized(batch: tuple[np.ndarray, np.ndarray, np.ndarray]) -> KdeBatch:
        return localized_batch(engine, camera, sigma_nm, refine, *batch)

    yield from (pipelined if engine.leaves_a_core_free() else map)(localized, predicted())


def pipelined(work: Callable[[T], R], items: Iterator[T]) -> Iterator[R]:
    """``map(work, items)``, with ``work`` on each item in a worker thread while the next item
    is made: at most one item waits, results come in order, errors of either side are raised
    here, and closing the generator early (a cancel) leaves no thread behind."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="smlm-pipelined") as worker:
        pending: Future[R] | None = None
        try:
            for item in items:
                if pending is not None:
                    yield pending.result()
                pending = worker.submit(work, item)
            if pending is not None:
                yield pending.result()
        finally:
            if pending is not None:
                pending.cancel()  # not started yet: drop it; running: the pool waits for it


@dataclass
class KdeResult:
    """Aggregated output of :func:`run_kde`."""

    sum_image: np.ndarray
    localizations: pd.DataFrame
    frames: range
    pixel_size_nm: float
    kdes: np.ndarray | None = None
    card: KdeCnnCard | None = None


def run_kde(
    stack: Sequence | np.ndarray,
    camera: Camera,
    engine: KdeEngine | None = None,
    frames: range | None = None,
    batch_size: int = 32,
    psf_sigma_nm: float | None = None,
    keep_kdes: bool = False,
    on_batch: Callable[[KdeBatch], None] | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    refine: bool = False,
    localize: bool = True,
    source: KdeSource | None = None,
) -> KdeResult:
    """Sum image (super-resolution, 4x grid) and localizations over a frame range.

    ``on_batch`` receives every batch (e.g. to stream KDEs to a file); ``keep_kdes`` keeps all
    KDEs in memory (only for short ranges). Raises :class:`Cancelled` when ``should_stop()``.
    ``source`` computes the batches elsewhere (:data:`KdeSource`, e.g. on a dask cluster; it
    must keep the KDEs when ``keep_kdes``); default :func:`iter_kde` with ``engine`` here.
    """
    engine = engine or KdeEngine.load()
    frames = range(stack.shape[0]) if frames is None else frames
    u = engine.upsampling
    rows, cols = stack.shape[-2:]
    total = np.zeros((rows * u, cols * u), dtype=np.float64)
    tables, kept = [], []
    done = 0
    batches = (iter_kde(stack, camera, engine, frames, batch_size, psf_sigma_nm, localize, refine)
               if source is None else source(frames, batch_size))
    with closing(batches):  # on cancel, also ends the localization of the batch in flight
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled("cancelled by the user")
            batch = next(batches, None)
            if batch is None:
                break
            total += batch.kde_sum()
            tables.append(batch.localizations)
            if keep_kdes:
                kept.append(batch.kdes)
            if on_batch is not None:
                on_batch(batch)
            done += len(batch.frames)
            if progress is not None:
                progress(done, len(frames))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return KdeResult(total.astype(np.float32), table, frames, camera.pixel_size,
                     np.concatenate(kept) if keep_kdes else None, engine.card)
