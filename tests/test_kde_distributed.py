"""The KDE CNN and localization on a 2-worker dask LocalCluster: the CNN loaded once per worker,
batches in frame order, the table and the summed image equal to a single-process run; the
shared chunk map stops submitting and cancels pending chunks when asked to stop."""

import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from napari_smlm_diffusion.camera import preset
from napari_smlm_diffusion.devices import Cancelled
from napari_smlm_diffusion.pipeline import KdeEngine, run_kde
from napari_smlm_diffusion.simulate import SimulationConfig, simulate_stack
from napari_smlm_diffusion.weights import KDE_CNN_NAME

distributed = pytest.importorskip("distributed")


@pytest.fixture
def one_torch_thread():
    """Workers of a thread cluster share the process's torch threads; convolutions round
    differently with another thread count, so the comparison runs with one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def test_two_workers_give_the_single_process_table_and_sum(client, monkeypatch,
                                                           one_torch_thread):
    from napari_smlm_diffusion.dask_cluster import worker_model_count
    from napari_smlm_diffusion.kde_distributed import KdeSpec, distributed_kde_source

    camera = preset("sCMOS")
    stack = simulate_stack(9, SimulationConfig(size=(32, 32), density=3.0, camera=camera),
                           seed=5).frames
    engine = KdeEngine.load(KDE_CNN_NAME, "cpu")
    frames = range(1, 9)

    def run(source=None, keep_kdes=False):
        steps = []
        result = run_kde(stack, camera, engine, frames, 3, 150.0, keep_kdes=keep_kdes,
                         progress=lambda done, total: steps.append((done, total)),
                         source=source)
        return result, steps

    single, single_steps = run()
    assert len(single.localizations) > 20  # the shipped CNN finds the simulated molecules
    loads = []
    load = KdeEngine.load.__func__
    monkeypatch.setattr(KdeEngine, "load", classmethod(
        lambda cls, *args: loads.append(threading.current_thread().name) or load(cls, *args)))
    spec = KdeSpec(KDE_CNN_NAME, "cpu")
    with distributed.get_task_stream(client) as tasks:
        cluster, cluster_steps = run(distributed_kde_source(client, spec, stack, camera, 150.0))
    kept, _ = run(distributed_kde_source(client, spec, stack, camera, 150.0, keep_kdes=True),
                  keep_kdes=True)
    ran_on = client.run(worker_model_count)
    batches = [task for task in tasks.data if task["key"].startswith("run_kde_batch")]
    assert len(batches) == 3  # frames 1-3, 4-6, 7-8
    assert 1 <= len(loads) == sum(ran_on.values()) <= 2  # once per worker that ran batches
    assert cluster_steps == single_steps == [(3, 8), (6, 8), (8, 8)]
    pd.testing.assert_frame_equal(cluster.localizations, single.localizations)
    np.testing.assert_array_equal(cluster.sum_image, single.sum_image)
    assert cluster.kdes is None
    np.testing.assert_array_equal(kept.sum_image, single.sum_image)
    expected = run(keep_kdes=True)[0].kdes
    np.testing.assert_array_equal(kept.kdes, expected)


def slow_double(indices, data):
    time.sleep(0.3)
    return 2 * data


def test_a_stop_cancels_pending_chunks_and_submits_no_more(client):
    from napari_smlm_diffusion.dask_cluster import IN_FLIGHT_PER_WORKER, map_chunks

    drawn = []

    def chunks():
        for i in range(20):
            drawn.append(i)
            yield np.array([i]), np.full(3, i)

    results = []
    futures = []
    submit = client.submit
    client.submit = lambda *args, **kwargs: futures.append(submit(*args, **kwargs)) or \
        futures[-1]
    with pytest.raises(Cancelled):
        for result in map_chunks(client, chunks(), slow_double,
                                 should_stop=lambda: len(results) >= 1):
            results.append(result)
    assert len(results) == 1
    np.testing.assert_array_equal(results[0], [0, 0, 0])
    assert len(drawn) == len(futures) == IN_FLIGHT_PER_WORKER * 2  # none drawn after the stop
    time.sleep(0.1)
    assert [f.status for f in futures[1:]] == ["cancelled"] * (len(futures) - 1)


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    from napari_smlm_diffusion.dask_cluster import connect
    from napari_smlm_diffusion.errors import InputError

    started = time.perf_counter()
    with pytest.raises(InputError, match="cannot reach the dask scheduler at 'tcp://127.0.0"), \
            connect(scheduler="tcp://127.0.0.1:9", timeout="2s"):
        pass
    assert time.perf_counter() - started < 15


def test_localize_command_on_two_worker_processes(tmp_path):
    """``localize --workers 2`` (a local cluster of processes) writes the single-process
    table."""
    from napari_smlm_diffusion.cli import main
    from napari_smlm_diffusion.io import read_localizations

    assert main(["simulate", str(tmp_path / "sim"), "--frames", "6", "--size", "32",
                 "--density", "2", "--seed", "4"]) == 0
    stack = str(tmp_path / "sim" / "stack.tif")
    options = ["--device", "cpu", "--batch-size", "2"]
    assert main(["localize", stack, "-o", str(tmp_path / "single.csv"), *options]) == 0
    assert main(["localize", stack, "-o", str(tmp_path / "workers.csv"), *options,
                 "--workers", "2"]) == 0
    single = read_localizations(tmp_path / "single.csv")
    assert len(single) > 10
    # Identical up to float rounding: the workers run torch on 1 thread each.
    pd.testing.assert_frame_equal(read_localizations(tmp_path / "workers.csv"), single,
                                  rtol=1e-6, atol=1e-9)


def test_without_distributed_the_error_says_how_to_install(monkeypatch):
    import sys

    from napari_smlm_diffusion.dask_cluster import connect
    from napari_smlm_diffusion.errors import InputError

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install 'napari-smlm-diffusion\[distributed\]'"), \
            connect(workers=2):
        pass


def _environment(*names: str) -> tuple:
    import os

    return tuple(os.environ.get(name) for name in names)


def test_local_worker_processes_start_without_the_malloc_trim_that_slowed_them():
    from napari_smlm_diffusion.dask_cluster import connect, local_worker_environment

    assert "MALLOC_TRIM_THRESHOLD_" not in local_worker_environment()
    assert "OMP_NUM_THREADS" in local_worker_environment()  # dask's other settings stay
    with connect(workers=1) as client:
        seen = client.run(_environment, "MALLOC_TRIM_THRESHOLD_")
    assert list(seen.values()) == [(None,)]
