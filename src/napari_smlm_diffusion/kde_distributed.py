"""The KDE CNN (and the localization on its KDEs) on a dask.distributed cluster (optional extra
``[distributed]``; the shared machinery, SLURM included, is in :mod:`dask_cluster`).

The client reads the frames in the batches of a single-process run and sends each to a worker,
which loads the CNN once and returns the batch's localizations and the sum of its KDEs (all
KDEs only when they are kept). Batches come back in frame order, so the table and the summed
image equal those of a single-process run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .camera import Camera
from .dask_cluster import map_chunks, worker_cached
from .frames import FrameChecks, frame_chunks
from .pipeline import KdeBatch, KdeEngine, KdeSource, check_kde_input, localized_batch


@dataclass(frozen=True)
class KdeSpec:
    """What a worker needs to load the KDE CNN (``torch_threads``: intra-op threads per
    worker, None to keep torch's default; ``threshold``: the user's detection threshold, None
    for the card's)."""

    weights: str
    device: str = "cpu"
    torch_threads: int | None = None
    threshold: float | None = None


def worker_kde_engine(spec: KdeSpec) -> KdeEngine:
    """The KDE CNN of ``spec`` on the current worker, loaded on its first batch."""
    def load() -> KdeEngine:
        engine = KdeEngine.load(spec.weights, spec.device)
        engine.threshold = spec.threshold
        return engine

    return worker_cached(spec, load, spec.torch_threads)


def run_kde_batch(spec: KdeSpec, camera: Camera, sigma_nm: float, localize: bool, refine: bool,
                  keep_kdes: bool, indices: Sequence[int], data: np.ndarray) -> KdeBatch:
    """One batch on a worker: KDEs (or only their sum, unless ``keep_kdes``) and, when
    ``localize``, the localizations (as :func:`pipeline.iter_kde` makes them)."""
    engine = worker_kde_engine(spec)
    indices = np.asarray(indices)
    kdes = engine.predict(data, camera)
    batch = (localized_batch(engine, camera, sigma_nm, refine, indices, data, kdes) if localize
             else KdeBatch(indices, kdes, pd.DataFrame()))
    return batch if keep_kdes else replace(batch, kdes=kdes[:0], summed=kdes.sum(axis=0))


def distributed_kde_source(client: Any, spec: KdeSpec, stack: Any, camera: Camera,
                           psf_sigma_nm: float | None, localize: bool = True,
                           refine: bool = False, keep_kdes: bool = False,
                           notify: Callable[[str], None] = print,
                           should_stop: Callable[[], bool] | None = None) -> KdeSource:
    """A :data:`pipeline.KdeSource` that computes batches on ``client``'s workers (frame
    checks reported through ``notify``; ``should_stop`` as in :func:`dask_cluster.map_chunks`)."""

    def source(frames: range, batch_size: int) -> Iterator[KdeBatch]:
        frames, sigma_nm = check_kde_input(stack, camera, frames, batch_size, psf_sigma_nm)
        chunks = frame_chunks(stack, frames, batch_size, FrameChecks(camera, notify))
        yield from map_chunks(client, chunks, run_kde_batch, spec, camera, sigma_nm, localize,
                              refine, keep_kdes, should_stop=should_stop)

    return source
