"""The KDE CNN job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.pipeline.iter_kde` (no Qt, no napari).

The generator yields :class:`Progress` and :class:`Notice` messages and returns exactly one of
:class:`Finished`, :class:`Stopped` or :class:`Failed`; it never raises, so no traceback reaches
the user. It checks ``stop`` after loading the model and after every batch, so a cancel takes
effect within one batch, and it releases the model (and cached GPU memory) when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...camera import Camera
from ...io import StackError
from ...pipeline import DeviceError, KdeEngine, KdeResult, iter_kde
from ...pretrained import WeightsError

logger = logging.getLogger(__name__)
EXPECTED_ERRORS = (WeightsError, DeviceError, StackError, ValueError, OSError, MemoryError,
                   torch.cuda.OutOfMemoryError)


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


@dataclass(frozen=True)
class Progress:
    """Frames done so far."""

    done: int
    total: int
    text: str = ""


@dataclass(frozen=True)
class Notice:
    """A warning from the engine (e.g. out of GPU memory, retrying with smaller batches)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The job completed."""

    result: KdeResult
    device: str
    seconds: float


@dataclass(frozen=True)
class Stopped:
    """The job was cancelled after ``done`` of ``total`` frames."""

    done: int
    total: int


@dataclass(frozen=True)
class Failed:
    """The job failed; ``message`` is one line for the user."""

    message: str


Outcome = Finished | Stopped | Failed


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (at most 300 characters)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def kde_job(request: KdeRequest, stop: threading.Event
            ) -> Generator[Progress | Notice, None, Outcome]:
    """Run the KDE CNN over ``request.frames``; see the module docstring."""
    engine: KdeEngine | None = None
    notices: list[str] = []
    total = len(request.frames)
    started = time.perf_counter()
    try:
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
            while notices:
                yield Notice(notices.pop(0))
            yield Progress(done, total)
            if stop.is_set() and done < total:
                return Stopped(done, total)
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        result = KdeResult(summed.astype(np.float32), table, request.frames,
                           request.camera.pixel_size, kept, engine.card)
        return Finished(result, engine.device.type, time.perf_counter() - started)
    except EXPECTED_ERRORS as exc:
        return Failed(one_line(exc))
    except Exception as exc:  # a bug: say so in one line, keep the traceback in the log
        logger.warning("KDE CNN job failed", exc_info=True)
        return Failed(f"unexpected {type(exc).__name__}: {one_line(exc)} (details in the log)")
    finally:
        cuda = engine is not None and engine.device.type == "cuda"
        engine = None
        if cuda:
            torch.cuda.empty_cache()
