"""The posterior on a dask.distributed cluster (optional extra ``[distributed]``).

The client reads the frames block by block (the blocks of a single-process run: the same
frames, counted from the start of the range) and sends each block to a worker with the run's
settings; a worker loads the networks once (they stay on it for every later block of any run
with the same weights and device) and returns the block's per-frame posteriors and
localizations. Results are taken in frame order, with at most two blocks per worker in flight,
so the client's memory does not grow with the number of frames and the outputs equal those of a
single-process run. Workers need the weights files at the same paths (the shipped ones are
inside the package); the stack itself is read only by the client.

On SLURM, start a cluster with dask-jobqueue (``SLURMCluster(...).scale(jobs=N)``) and pass
its ``scheduler_address`` as ``--scheduler``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .camera import Camera
from .errors import InputError
from .frames import FrameChecks, read_frames
from .posterior import PosteriorBatch, PosteriorEngine, PosteriorSettings, posterior_block

IN_FLIGHT_PER_WORKER = 2
_LOAD_LOCK = threading.Lock()


def import_distributed() -> Any:
    """The ``distributed`` module, or InputError saying how to install it."""
    try:
        import distributed
    except ImportError as error:
        raise InputError("--workers and --scheduler need dask.distributed: pip install "
                         "'napari-smlm-diffusion[distributed]'") from error
    return distributed


@contextmanager
def connect(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A client of an existing scheduler, or of a local cluster of ``workers`` processes (one
    thread each), closed (with the local cluster) on exit."""
    distributed = import_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except OSError as error:
            raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: {error}") \
                from error
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


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
    from distributed import get_worker

    worker = get_worker()
    with _LOAD_LOCK:
        engines = worker.__dict__.setdefault("_smlm_posterior_engines", {})
        if spec not in engines:
            if spec.torch_threads:
                import torch

                torch.set_num_threads(spec.torch_threads)
            engines[spec] = PosteriorEngine.load(spec.kde_weights, spec.denoiser_weights,
                                                 spec.device)
        return engines[spec]


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
                       notify=print):
    """A :data:`posterior_outputs.Source` that computes blocks on ``client``'s workers."""
    in_flight = max(1, IN_FLIGHT_PER_WORKER * len(client.scheduler_info()["workers"]))

    def source(frames: range, block: int) -> Iterator[PosteriorBatch]:
        checks = FrameChecks(camera, notify)
        pending: deque = deque()
        starts = iter(range(0, len(frames), block))
        try:
            while True:
                while len(pending) < in_flight:
                    start = next(starts, None)
                    if start is None:
                        break
                    indices = np.asarray(frames[start:start + block])
                    data = read_frames(stack, indices)
                    checks(data, indices)
                    pending.append(client.submit(run_block, spec, camera, settings,
                                                 psf_sigma_nm, indices.tolist(), data,
                                                 pure=False))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    return source
