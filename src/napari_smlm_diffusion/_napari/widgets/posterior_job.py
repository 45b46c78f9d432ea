"""The diffusion posterior job, run in a worker thread: a generator of typed messages around
:func:`napari_smlm_diffusion.posterior.iter_posterior` (no Qt, no napari).

See :mod:`.jobs` for the messages and the error handling. The job checks ``stop`` after loading
the networks, after every frame and after every sampler step, so a cancel takes effect within one
network evaluation; the per-frame maps are gathered in arrays allocated up front and only handed
over when every frame is done.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...camera import Camera
from ...devices import Cancelled
from ...posterior import FrameSums, PosteriorEngine, PosteriorSettings, iter_posterior
from .jobs import Finished, Job, Tally, guarded


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


@dataclass(frozen=True)
class PosteriorMaps:
    """What the job hands to the GUI.

    ``means`` and ``stds`` are (frames, rows, cols) on the ``upsampling`` x grid, ``samples``
    (frames, kept, rows, cols) or None, ``sum_mean`` and ``sum_std`` the summed image over the
    frames and its calibrated std (:class:`~napari_smlm_diffusion.posterior.FrameSums`, as the
    CLI's sum_mean.tif and sum_std.tif), ``localizations`` the table of all frames and ``card``
    the denoiser's model card.
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


def posterior_job(request: PosteriorRequest, stop: threading.Event) -> Job:
    """Sample the posterior of ``request.frames``; see the module docstring."""
    return (yield from guarded(_posterior_job(request, stop), "Diffusion posterior"))


def _posterior_job(request: PosteriorRequest, stop: threading.Event) -> Job:
    tally = Tally(len(request.frames), stop)
    yield tally.loading(request.device)
    engine = PosteriorEngine.load(denoiser_weights=request.denoiser, device=request.device,
                                  notify=tally.notify)
    if (yield from tally.loaded(f"models loaded on {engine.device.type}; first frame...")):
        return tally.stopped()
    u = engine.kde.upsampling
    shape = (tally.total, *(n * u for n in request.stack.shape[-2:]))
    keep = request.settings.keep_samples
    means, stds = np.empty(shape, np.float32), np.empty(shape, np.float32)
    kept = np.empty((shape[0], keep, *shape[1:]), np.float32) if keep else None
    sums = FrameSums()
    batches = iter_posterior(request.stack, request.camera, engine, request.frames,
                             request.settings, request.psf_sigma_nm, should_stop=stop.is_set)
    try:
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
    maps = PosteriorMaps(means, stds, sums.mean.astype(np.float32), sums.std(), kept,
                         tally.table(), request.frames, engine.card, u)
    return Finished(maps, engine.device.type, tally.seconds())
