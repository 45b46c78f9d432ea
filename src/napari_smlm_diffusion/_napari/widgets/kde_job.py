"""The KDE CNN job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.pipeline.iter_kde` (no Qt, no napari).

See :mod:`.jobs` for the messages and the error handling. The job checks ``stop`` after loading
the model and after every batch, so a cancel takes effect within one batch.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...camera import Camera
from ...pipeline import KdeEngine, KdeResult, iter_kde
from .jobs import Failed, Finished, Job, Notice, Progress, Stopped, drain, guarded

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
    notices: list[str] = []
    total = len(request.frames)
    started = time.perf_counter()
    engine = KdeEngine.load(request.weights, request.device, notify=notices.append)
    yield Progress(0, total, f"model loaded on {engine.device.type}")
    if stop.is_set():
        return Stopped(0, total)
    rows, cols = request.stack.shape[-2:]
    u = engine.upsampling
    summed = np.zeros((rows * u, cols * u), dtype=np.float64)
    kept = np.empty((total, rows * u, cols * u), np.float32) if request.keep_kdes else None
    tables: list[pd.DataFrame] = []
    done = 0
    for batch in iter_kde(request.stack, request.camera, engine, request.frames,
                          request.batch_size, request.psf_sigma_nm):
        summed += batch.kdes.sum(axis=0)
        if kept is not None:
            kept[done:done + len(batch.frames)] = batch.kdes
        tables.append(batch.localizations)
        done += len(batch.frames)
        yield from drain(notices)
        yield Progress(done, total)
        if stop.is_set() and done < total:
            return Stopped(done, total)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    result = KdeResult(summed.astype(np.float32), table, request.frames,
                       request.camera.pixel_size, kept, engine.card)
    return Finished(result, engine.device.type, time.perf_counter() - started)
