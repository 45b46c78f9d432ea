"""The diffusion posterior job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.posterior.iter_posterior` (no Qt, no napari).

See :mod:`.jobs` for the messages and the error handling. The job checks ``stop`` after loading
the networks, after every frame and after every sampler step, so a cancel takes effect within one
network evaluation; the per-frame maps are gathered in arrays allocated up front and only handed
over when every frame is done. With a dask scheduler the blocks of frames run on its workers
(:mod:`napari_smlm_diffusion.posterior_distributed`, as ``smlm-diffusion posterior
--scheduler``); a cancel then submits no further block and cancels the pending ones.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...camera import Camera
from ...devices import Cancelled
from ...posterior import (
    FrameSums,
    PosteriorBatch,
    PosteriorEngine,
    PosteriorSettings,
    iter_posterior,
)
from ...uncertainty_check import (
    NoPersistenceError,
    UncertaintyCheckError,
    check_uncertainty,
    describe,
)
from .jobs import (
    Finished,
    Job,
    Progress,
    Tally,
    dask_client,
    data_warnings,
    found_nothing,
    guarded,
)


@dataclass(frozen=True)
class PosteriorRequest:
    """Everything a posterior job needs, gathered and validated in the GUI thread."""

    stack: Any
    frames: range
    camera: Camera
    psf_sigma_nm: float
    denoiser: str
    device: str
    settings: PosteriorSettings
    kde_weights: str | None = None  # None: the KDE CNN the denoiser was trained with
    scheduler: str = ""  # a dask scheduler's address; "" runs here


@dataclass(frozen=True)
class PosteriorMaps:
    """What the job hands to the GUI.

    ``means`` and ``stds`` are (frames, rows, cols) on the ``upsampling`` x grid, ``samples``
    (frames, kept, rows, cols) or None, ``sum_mean`` and ``sum_std`` the summed image over the
    frames and its calibrated std (:class:`~napari_smlm_diffusion.posterior.FrameSums`, as the
    CLI's sum_mean.tif and sum_std.tif), ``localizations`` the table of all frames and ``card``
    the denoiser's model card, ``uncertainty_check`` one line of :func:`uncertainty_line`.
    """

    means: np.ndarray
    stds: np.ndarray
    sum_mean: np.ndarray
    sum_std: np.ndarray
    samples: np.ndarray | None
    localizations: pd.DataFrame
    frames: range
    card: dict
    upsampling: int
    uncertainty_check: str


def uncertainty_line(table: pd.DataFrame) -> str:
    """The label-free check of the reported uncertainties on a run's localizations, one line
    (:func:`napari_smlm_diffusion.uncertainty_check.describe`), or why it cannot be made."""
    try:
        return f"Label-free check: {describe(check_uncertainty(table))}."
    except NoPersistenceError as error:
        return f"Label-free check: {error}."
    except UncertaintyCheckError:
        return ("Label-free check: not enough molecules found again in consecutive frames "
                "(run more consecutive frames).")


def posterior_job(request: PosteriorRequest, stop: threading.Event) -> Job:
    """Sample the posterior of ``request.frames``; see the module docstring."""
    return (yield from guarded(_posterior_job(request, stop), "Diffusion posterior"))


def _posterior_job(request: PosteriorRequest, stop: threading.Event) -> Job:
    tally = Tally(len(request.frames), stop)
    yield tally.loading(request.device)
    engine = PosteriorEngine.load(request.kde_weights, request.denoiser, device=request.device,
                                  notify=tally.notify)
    sample = yield from data_warnings(request.stack, request.frames, request.camera,
                                      request.psf_sigma_nm, engine.kde.card)
    if request.scheduler:
        yield Progress(0, tally.total, f"connecting to the dask scheduler {request.scheduler}...")
    with dask_client(request.scheduler) as client:
        if (yield from tally.loaded(f"models loaded on {engine.device.type}; first frame...")):
            return tally.stopped()
        u = engine.kde.upsampling
        shape = (tally.total, *(n * u for n in request.stack.shape[-2:]))
        keep = request.settings.keep_samples
        means, stds = np.empty(shape, np.float32), np.empty(shape, np.float32)
        kept = np.empty((shape[0], keep, *shape[1:]), np.float32) if keep else None
        sums = FrameSums()
        batches = posterior_batches(request, engine, client, tally.notify, stop)
        try:
            with closing(batches):  # a stop cancels the blocks pending on the workers
                for batch in batches:
                    for offset, frame in enumerate(batch.frames, start=tally.done):
                        means[offset] = frame.mean
                        stds[offset] = np.sqrt(np.maximum(frame.reported_variance, 0.0))
                        sums.add(frame)
                        if kept is not None:
                            kept[offset] = frame.kept
                    if (yield from tally.advance(len(batch.frames), batch.localizations)):
                        return tally.stopped()
        except Cancelled:  # asked to stop in the middle of a frame's sampling
            return tally.stopped()
    table = tally.table()
    yield from found_nothing(sample, len(table))
    maps = PosteriorMaps(means, stds, sums.mean.astype(np.float32), sums.std(), kept,
                         table, request.frames, engine.card, u, uncertainty_line(table))
    where = f"the dask cluster at {request.scheduler}" if client else engine.device.type
    return Finished(maps, where, tally.seconds())


def posterior_batches(request: PosteriorRequest, engine: PosteriorEngine, client: Any,
                      notify: Callable[[str], None],
                      stop: threading.Event) -> Iterator[PosteriorBatch]:
    """The per-frame posteriors of the request, computed here (``client`` None) or on the
    workers of a dask client in the blocks of a run here
    (:mod:`napari_smlm_diffusion.posterior_distributed`)."""
    if client is None:
        return iter_posterior(request.stack, request.camera, engine, request.frames,
                              request.settings, request.psf_sigma_nm, should_stop=stop.is_set)
    from ...dask_cluster import worker_path
    from ...posterior_distributed import EngineSpec, distributed_source
    from ...posterior_sampling import frames_per_block

    spec = EngineSpec(worker_path(request.kde_weights), worker_path(request.denoiser),
                      request.device)
    source = distributed_source(client, spec, request.stack, request.camera, request.settings,
                                request.psf_sigma_nm, notify, should_stop=stop.is_set)
    block = frames_per_block(request.settings.samples, request.stack.shape[-2:], engine.device)
    return source(request.frames, block)
