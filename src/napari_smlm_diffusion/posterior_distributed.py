"""The posterior on a dask.distributed cluster (optional extra ``[distributed]``; the shared
machinery, SLURM included, is in :mod:`dask_cluster`).

The client reads the frames block by block (the blocks of a single-process run: the same
frames, counted from the start of the range) and sends each block to a worker with the run's
settings; a worker loads the networks once and returns the block's per-frame posteriors and
localizations. Results come in frame order, so the outputs equal those of a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .camera import Camera
from .dask_cluster import map_chunks, worker_cached
from .frames import FrameChecks, frame_chunks
from .posterior import PosteriorBatch, PosteriorEngine, PosteriorSettings, posterior_block


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to load the networks (``torch_threads``: intra-op threads per
    worker, None to keep torch's default)."""

    kde_weights: str | None  # None: the CNN the denoiser was trained with
    denoiser_weights: str
    device: str = "cpu"
    torch_threads: int | None = None


def worker_engine(spec: EngineSpec) -> PosteriorEngine:
    """The networks of ``spec`` on the current worker, loaded on its first block."""
    return worker_cached(spec, lambda: PosteriorEngine.load(
        spec.kde_weights, spec.denoiser_weights, spec.device), spec.torch_threads)


def run_block(spec: EngineSpec, camera: Camera, settings: PosteriorSettings,
              psf_sigma_nm: float | None, indices: Sequence[int],
              data: np.ndarray) -> list[PosteriorBatch]:
    """A block's per-frame posteriors on a worker (each sample's peak tables dropped: only the
    maps and the localizations travel back)."""
    batches = list(posterior_block(worker_engine(spec), data, indices, camera, settings,
                                   psf_sigma_nm))
    return [PosteriorBatch([replace(b.frames[0], sample_peaks=[])], b.localizations)
            for b in batches]


def distributed_source(client: Any, spec: EngineSpec, stack: Any, camera: Camera,
                       settings: PosteriorSettings, psf_sigma_nm: float | None,
                       notify: Callable[[str], None] = print,
                       should_stop: Callable[[], bool] | None = None):
    """A :data:`posterior_outputs.Source` that computes blocks on ``client``'s workers
    (``should_stop``: as in :func:`dask_cluster.map_chunks`)."""

    def source(frames: range, block: int) -> Iterator[PosteriorBatch]:
        chunks = frame_chunks(stack, frames, block, FrameChecks(camera, notify))
        for batches in map_chunks(client, chunks, run_block, spec, camera, settings,
                                  psf_sigma_nm, should_stop=should_stop):
            yield from batches

    return source
