"""What the worker-thread jobs of the widgets have in common (no Qt, no napari).

A job is a generator that yields :class:`Progress` and :class:`Notice` messages and returns
exactly one of :class:`Finished`, :class:`Stopped` or :class:`Failed`. :func:`guarded` turns any
exception of the job into a one-line :class:`Failed`, so no traceback reaches the user, and frees
cached GPU memory once the job (and with it its networks) is gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ...camera import Camera
from ...devices import DeviceError
from ...errors import one_line
from ...inspection import job_sample, job_warnings, no_molecule_warning, ranges_of
from ...io import StackError
from ...pretrained import WeightsError

logger = logging.getLogger(__name__)
EXPECTED_ERRORS = (WeightsError, DeviceError, StackError, ValueError, OSError, MemoryError,
                   torch.cuda.OutOfMemoryError)


@dataclass(frozen=True)
class Progress:
    """Frames done so far, ``seconds`` spent on them (model loading excluded), and a step's
    description (e.g. "loading models on cpu...") when no frame is done yet."""

    done: int
    total: int
    text: str = ""
    seconds: float = 0.0


def duration(seconds: float) -> str:
    """A duration for people: "42 s", "3 min 05 s", "2 h 07 min"."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(message: Progress) -> str:
    """One line of progress: frames, seconds per frame and the time left (ETA)."""
    if message.done == 0:
        return message.text or f"0 / {message.total} frames"
    per_frame = message.seconds / message.done
    left = per_frame * (message.total - message.done)
    eta = f", about {duration(left)} left" if message.done < message.total else ""
    return (f"{message.done} / {message.total} frames, {per_frame:.2f} s per frame{eta}")


@dataclass(frozen=True)
class Notice:
    """A warning from the engine (e.g. out of GPU memory, or weights still being trained)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The job completed with ``result``."""

    result: Any
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
Job = Generator[Progress | Notice, None, Outcome]


def drain(notices: list[str]) -> Generator[Notice, None, None]:
    """Yield (and remove) the engine's pending notices as :class:`Notice` messages."""
    while notices:
        yield Notice(notices.pop(0))


def data_warnings(stack: Any, frames: range, camera: Camera, psf_sigma_nm: float,
                  card: Any) -> Generator[Notice, None, np.ndarray]:
    """Check the settings on up to 50 frames of the job (as the command line does) and yield
    each warning as a :class:`Notice`: settings far from the data, conditions outside the
    training ranges of the KDE CNN (``card``, its model card). Returns the frames looked at."""
    sample = job_sample(stack, frames)
    for text in job_warnings(sample, camera, psf_sigma_nm, ranges_of(card.training_ranges)):
        yield Notice(text)
    return sample


def found_nothing(sample: np.ndarray, n_localizations: int) -> Generator[Notice, None, None]:
    """A :class:`Notice` when the job found nothing although ``sample`` has clear spots."""
    text = no_molecule_warning(sample, n_localizations)
    if text:
        yield Notice(text)


class Tally:
    """Progress of a job: frames done, localization tables, the engine's notices, time.

    Pass :meth:`notify` to the engine; ``yield tally.loading(device)`` before loading the
    networks (which takes seconds), ``stopped = yield from tally.loaded(text)`` after loading
    them and ``stopped = yield from tally.advance(n, table)`` after each step report the notices
    and the progress, and are True when the user asked to stop before the last frame. The
    seconds per frame count from the end of the loading.
    """

    def __init__(self, total: int, stop: threading.Event) -> None:
        self.total, self.done = total, 0
        self._stop = stop
        self._notices: list[str] = []
        self._tables: list[pd.DataFrame] = []
        self._started = self._frames_started = time.perf_counter()

    def loading(self, device: str, what: str = "models") -> Progress:
        """The message shown while the networks load (before the first frame)."""
        return Progress(0, self.total, f"loading {what} on {device}...")

    def notify(self, text: str) -> None:
        """Keep a notice of the engine (reported with the next progress message)."""
        self._notices.append(text)

    def loaded(self, text: str) -> Generator[Progress | Notice, None, bool]:
        """Report that the networks are loaded; True if the user already asked to stop."""
        yield from drain(self._notices)
        yield Progress(0, self.total, text)
        self._frames_started = time.perf_counter()
        return self._stop.is_set()

    def advance(self, frames: int, table: pd.DataFrame) -> Generator[Progress | Notice, None, bool]:
        """Count ``frames`` more frames and their localizations; report; check for a stop."""
        self.done += frames
        self._tables.append(table)
        yield from drain(self._notices)
        yield Progress(self.done, self.total, seconds=time.perf_counter() - self._frames_started)
        return self._stop.is_set() and self.done < self.total

    def stopped(self) -> Stopped:
        """The outcome of a job stopped now."""
        return Stopped(self.done, self.total)

    def table(self) -> pd.DataFrame:
        """All localizations so far, in one table."""
        return pd.concat(self._tables, ignore_index=True) if self._tables else pd.DataFrame()

    def seconds(self) -> float:
        """Time since the job started."""
        return time.perf_counter() - self._started


@contextmanager
def dask_client(scheduler: str) -> Iterator[Any | None]:
    """A client of the dask scheduler at ``scheduler`` (closed on exit), or None when it is
    empty (the job runs in this process). Unreachable: InputError (one line)."""
    if not scheduler:
        yield None
        return
    from ...dask_cluster import connect

    with connect(scheduler=scheduler) as client:
        yield client


def guarded(job: Job, what: str) -> Job:
    """Run ``job``; an exception becomes :class:`Failed` (unexpected ones are logged).

    When the job is over its frame (holding the networks) is dropped and cached GPU memory is
    returned to the device.
    """
    try:
        return (yield from job)
    except EXPECTED_ERRORS as exc:
        return Failed(one_line(exc))
    except Exception as exc:  # a bug: say so in one line, keep the traceback in the log
        logger.warning("%s job failed", what, exc_info=True)
        return Failed(f"unexpected {type(exc).__name__}: {one_line(exc)} (details in the log)")
    finally:
        job.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
