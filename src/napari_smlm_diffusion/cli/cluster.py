"""The ``--workers`` / ``--scheduler`` options of the commands that can run on a dask cluster."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .options import positive_int


def add_cluster_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--workers N`` or ``--scheduler ADDRESS`` (``verb``: what the workers do)."""
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=positive_int, default=None, metavar="N",
                         help=f"{verb} on a local dask cluster of N worker processes (needs the "
                         "[distributed] extra); outputs equal those of a single process")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help=f"{verb} on an existing dask cluster (e.g. tcp://host:8786, or the "
                         "scheduler_address of a dask-jobqueue SLURMCluster); the weights must "
                         "be readable by the workers at the same paths")


@contextmanager
def cluster_client(args: argparse.Namespace) -> Iterator[Any | None]:
    """A dask client for ``--workers``/``--scheduler`` (closed on exit), or None (this
    process)."""
    if not (args.workers or args.scheduler):
        yield None
        return
    from ..dask_cluster import connect

    with connect(args.workers, args.scheduler) as client:
        yield client


def worker_threads(args: argparse.Namespace) -> int | None:
    """Torch threads per worker of a local cluster (the cores shared out); None on a given
    scheduler (its workers keep their own setting)."""
    return None if args.scheduler else max(1, (os.cpu_count() or 1) // args.workers)
