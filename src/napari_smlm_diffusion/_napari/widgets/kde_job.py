"""The KDE CNN job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.pipeline.iter_kde` (no Qt, no napari).

See :mod:`.jobs` for the messages and the error handling. The job checks ``stop`` after loading
the model and after every batch, so a cancel takes effect within one batch. With a dask scheduler
the batches run on its workers (:mod:`napari_smlm_diffusion.kde_distributed`, as
``smlm-diffusion localize --scheduler``); ``stop`` is also checked while a batch is away, and a
cancel submits no further batch and cancels the pending ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...camera import Camera
from ...devices import Cancelled
from ...pipeline import KdeBatch, KdeEngine, KdeResult, iter_kde
from .jobs import (
    Failed,
    Finished,
    Job,
    Notice,
    Progress,
    Stopped,
    Tally,
    dask_client,
    data_warnings,
    found_nothing,
    guarded,
)

__all__ = ["Failed", "Finished", "KdeRequest", "Notice", "Progress", "Stopped", "kde_job"]


@dataclass(frozen=True)
class KdeRequest:
    """Everything a job needs, gathered and validated in the GUI thread."""

    stack: Any
    frames: range
    camera: Camera
    psf_sigma_nm: float
    weights: str
    device: str
    batch_size: int
    keep_kdes: bool
    scheduler: str = ""  # a dask scheduler's address; "" runs here
    threshold: float | None = None  # the user's detection threshold; None: the model card's


def kde_job(request: KdeRequest, stop: threading.Event) -> Job:
    """Run the KDE CNN over ``request.frames``; see the module docstring."""
    return (yield from guarded(_kde_job(request, stop), "KDE CNN"))


def _kde_job(request: KdeRequest, stop: threading.Event) -> Job:
    tally = Tally(len(request.frames), stop)
    yield tally.loading(request.device, "the model")
    engine = KdeEngine.load(request.weights, request.device, notify=tally.notify)
    engine.threshold = request.threshold
    sample = yield from data_warnings(request.stack, request.frames, request.camera,
                                      request.psf_sigma_nm, engine.card)
    if request.scheduler:
        yield Progress(0, tally.total, f"connecting to the dask scheduler {request.scheduler}...")
    with dask_client(request.scheduler) as client:
        if (yield from tally.loaded(f"model loaded on {engine.device.type}; first batch...")):
            return tally.stopped()
        rows, cols = request.stack.shape[-2:]
        u = engine.upsampling
        summed = np.zeros((rows * u, cols * u), dtype=np.float64)
        kept = (np.empty((tally.total, rows * u, cols * u), np.float32) if request.keep_kdes
                else None)
        batches = kde_batches(request, engine, client, tally.notify, stop)
        try:
            with closing(batches):  # a stop cancels the batches pending on the workers
                for batch in batches:
                    summed += batch.kde_sum()
                    if kept is not None:
                        kept[tally.done:tally.done + len(batch.frames)] = batch.kdes
                    if (yield from tally.advance(len(batch.frames), batch.localizations)):
                        return tally.stopped()
        except Cancelled:  # asked to stop while a batch was on a worker
            return tally.stopped()
    table = tally.table()
    yield from found_nothing(sample, len(table))
    result = KdeResult(summed.astype(np.float32), table, request.frames,
                       request.camera.pixel_size, kept, engine.card)
    where = f"the dask cluster at {request.scheduler}" if client else engine.device.type
    return Finished(result, where, tally.seconds())


def kde_batches(request: KdeRequest, engine: KdeEngine, client: Any,
                notify: Callable[[str], None], stop: threading.Event) -> Iterator[KdeBatch]:
    """The batches of the request, computed here (``client`` None) or on the workers of a
    dask client (the same batches, :mod:`napari_smlm_diffusion.kde_distributed`)."""
    if client is None:
        return iter_kde(request.stack, request.camera, engine, request.frames,
                        request.batch_size, request.psf_sigma_nm)
    from ...dask_cluster import worker_path
    from ...kde_distributed import KdeSpec, distributed_kde_source

    spec = KdeSpec(worker_path(request.weights), request.device, threshold=request.threshold)
    source = distributed_kde_source(client, spec,
                                    request.stack, request.camera, request.psf_sigma_nm,
                                    keep_kdes=request.keep_kdes, notify=notify,
                                    should_stop=stop.is_set)
    return source(request.frames, request.batch_size)
