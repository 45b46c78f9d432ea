"""Frame chunks on a dask.distributed cluster (optional extra ``[distributed]``), shared by the
KDE CNN (:mod:`kde_distributed`) and the posterior (:mod:`posterior_distributed`).

The client reads the frames chunk by chunk and submits each chunk to a worker; results are
taken in frame order with at most :data:`IN_FLIGHT_PER_WORKER` chunks per worker in flight, so
the client's memory does not grow with the number of frames. A worker loads a model once
(:func:`worker_cached`) and keeps it for every later chunk of any run with the same weights and
device. Workers need the weights files at the same paths (the shipped ones are inside the
package); the stack itself is read only by the client.

On SLURM, start a cluster with dask-jobqueue (``SLURMCluster(...).scale(jobs=N)``) and pass its
``scheduler_address`` as ``--scheduler`` (or in the widgets' "Dask scheduler" field).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .devices import Cancelled
from .errors import InputError

IN_FLIGHT_PER_WORKER = 2
#: Seconds between two looks at ``should_stop`` while a chunk is computed on a worker.
POLL_SECONDS = 0.05
#: Seconds to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT = "20s"
_LOAD_LOCK = threading.Lock()

T = TypeVar("T")


def import_distributed() -> Any:
    """The ``distributed`` module, or InputError saying how to install it."""
    try:
        import distributed
    except ImportError as error:
        raise InputError("a dask cluster needs dask.distributed: pip install "
                         "'napari-smlm-diffusion[distributed]'") from error
    return distributed


@contextmanager
def connect(workers: int | None = None, scheduler: str | None = None,
            timeout: str | None = None) -> Iterator[Any]:
    """A client of an existing scheduler, or of a local cluster of ``workers`` processes (one
    thread each), closed (with the local cluster) on exit. A scheduler not reached within
    ``timeout`` (default :data:`CONNECT_TIMEOUT`) raises InputError (one line)."""
    distributed = import_distributed()
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=timeout or CONNECT_TIMEOUT)
        except (OSError, ValueError, TypeError) as error:
            raise InputError(f"cannot reach the dask scheduler at {scheduler!r}: "
                             f"{error}") from error
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": local_worker_environment()}), \
            distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def local_worker_environment() -> dict:
    """The environment dask sets for new worker processes, without ``MALLOC_TRIM_THRESHOLD_``.

    dask starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which hands every freed block
    over 64 KiB back to the system: the KDE CNN then ran 1.5x and the localization 2-3x slower
    in a worker than in the client (measured on 64x64 frames). Local workers start without it;
    workers of an existing cluster (``--scheduler``) keep whatever their launcher set."""
    import dask

    environment = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environment.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environment


def worker_path(path: str | None) -> str | None:
    """A weights path as the workers must see it (absolute: they may run elsewhere); names of
    shipped models and None unchanged."""
    return str(Path(path).resolve()) if path and Path(path).exists() else path


def worker_cached(key: Hashable, load: Callable[[], T], torch_threads: int | None = None) -> T:
    """The object ``load()`` made for ``key`` on the current dask worker, made on its first
    request (``torch_threads``: intra-op threads of torch on the worker, set before loading;
    None keeps torch's default)."""
    from distributed import get_worker

    worker = get_worker()
    with _LOAD_LOCK:
        cache = worker.__dict__.setdefault("_smlm_models", {})
        if key not in cache:
            if torch_threads:
                import torch

                torch.set_num_threads(torch_threads)
            cache[key] = load()
        return cache[key]


def worker_model_count(dask_worker: Any) -> int:
    """How many models :func:`worker_cached` holds on a worker (for ``client.run``)."""
    return len(dask_worker.__dict__.get("_smlm_models", {}))


def map_chunks(client: Any, chunks: Iterable[tuple[np.ndarray, np.ndarray]],
               function: Callable[..., T], *args: Any,
               should_stop: Callable[[], bool] | None = None) -> Iterator[T]:
    """``function(*args, indices, data)`` on the workers for every chunk ``(indices, data)``
    (indices as a list), results in chunk order.

    Chunks are drawn from ``chunks`` only when fewer than :data:`IN_FLIGHT_PER_WORKER` per
    worker are pending. ``should_stop`` is asked before every submission round and while
    waiting; when it answers True, ``Cancelled`` is raised. On any exit (also closing the
    generator) no further chunk is submitted and the pending ones are cancelled. A worker's
    exception is raised here.
    """
    in_flight = max(1, IN_FLIGHT_PER_WORKER * len(client.scheduler_info()["workers"]))
    pending: deque = deque()
    chunks = iter(chunks)

    def stopping() -> bool:
        return should_stop is not None and should_stop()

    try:
        while True:
            if stopping():
                raise Cancelled("cancelled by the user")
            while len(pending) < in_flight:
                chunk = next(chunks, None)
                if chunk is None:
                    break
                indices, data = chunk
                pending.append(client.submit(function, *args, np.asarray(indices).tolist(),
                                             data, pure=False))
            if not pending:
                return
            head = pending[0]
            while not head.done():
                if stopping():
                    raise Cancelled("cancelled by the user")
                time.sleep(POLL_SECONDS)
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
