"""The KDE CNN job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.pipeline.iter_kde` (no Qt, no napari).

See :mod:`.jobs` for the messages and the error handling. The job checks ``stop`` after loading
the model and after every batch, so a cancel takes effect within one batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...camera import Camera
from ...pipeline import KdeEngine, KdeResult, iter_kde
from .jobs import Failed, Finished, Job, Notice, Progress, Stopped, Tally, guarded

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


def kde_job(request: KdeRequest, stop: threading.Event) -> Job:
    """Run the KDE CNN over ``request.frames``; see the module docstring."""
    return (yield from guarded(_kde_job(request, stop), "KDE CNN"))


def _kde_job(request: KdeRequest, stop: threading.Event) -> Job:
    tally = Tally(len(request.frames), stop)
    yield tally.loading(request.device, "the model")
    engine = KdeEngine.load(request.weights, request.device, notify=tally.notify)
    if (yield from tally.loaded(f"model loaded on {engine.device.type}; first batch...")):
        return tally.stopped()
    rows, cols = request.stack.shape[-2:]
    u = engine.upsampling
    summed = np.zeros((rows * u, cols * u), dtype=np.float64)
    kept = (np.empty((tally.total, rows * u, cols * u), np.float32) if request.keep_kdes
            else None)
    for batch in iter_kde(request.stack, request.camera, engine, request.frames,
                          request.batch_size, request.psf_sigma_nm):
        summed += batch.kdes.sum(axis=0)
        if kept is not None:
            kept[tally.done:tally.done + len(batch.frames)] = batch.kdes
        if (yield from tally.advance(len(batch.frames), batch.localizations)):
            return tally.stopped()
    result = KdeResult(summed.astype(np.float32), tally.table(), request.frames,
                       request.camera.pixel_size, kept, engine.card)
    return Finished(result, engine.device.type, tally.seconds())
