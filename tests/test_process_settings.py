"""Process-wide settings shared by overlapping jobs: the BLAS limit of localization and the GIL
switch interval of the pipelined CNN and localization."""

import sys
import threading

import pytest

from napari_smlm_diffusion import process_settings
from napari_smlm_diffusion.pipeline import pipelined
from napari_smlm_diffusion.process_settings import PIPELINE_SWITCH_INTERVAL_S


class FakeBlas:
    """A BLAS whose thread count threadpoolctl's limit sets and restores."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.limits_set = 0

    def limit(self, limits: int, user_api: str):
        assert user_api == "blas"
        original, blas = self.threads, self
        self.threads = limits
        self.limits_set += 1

        class Limiter:
            def restore_original_limits(self) -> None:
                blas.threads = original

        return Limiter()


@pytest.fixture
def blas(monkeypatch):
    fake = FakeBlas(threads=4)
    monkeypatch.setattr(process_settings, "_blas_libraries", lambda: fake)
    return fake


def test_interleaved_jobs_restore_the_original_setting(blas):
    first, second = process_settings.single_threaded_blas(), process_settings.single_threaded_blas()
    first.__enter__()
    assert blas.threads == 1
    second.__enter__()
    first.__exit__(None, None, None)  # the first job ends while the second still runs
    assert blas.threads == 1
    second.__exit__(None, None, None)
    assert blas.threads == 4 and blas.limits_set == 1
    with process_settings.single_threaded_blas():  # a later job limits again
        assert blas.threads == 1
    assert blas.threads == 4


def test_threads_overlapping_in_any_order_leave_blas_as_found(blas):
    start = threading.Barrier(4)
    seen = []

    def job() -> None:
        start.wait()
        for _ in range(200):
            with process_settings.single_threaded_blas():
                seen.append(blas.threads)

    workers = [threading.Thread(target=job) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert set(seen) == {1} and len(seen) == 800
    assert blas.threads == 4


def test_an_error_inside_still_restores(blas):
    with pytest.raises(RuntimeError, match="failed"), process_settings.single_threaded_blas():
        raise RuntimeError("the job failed")
    assert blas.threads == 4


def test_the_pipeline_shortens_the_gil_switch_interval_and_restores_it_also_on_cancel():
    before = sys.getswitchinterval()
    seen = []

    def work(item: int) -> float:
        seen.append(sys.getswitchinterval())
        return item

    assert list(pipelined(work, iter(range(3)))) == [0, 1, 2]
    assert max(seen) <= PIPELINE_SWITCH_INTERVAL_S and sys.getswitchinterval() == before
    cancelled = pipelined(work, iter(range(5)))
    next(cancelled)
    assert sys.getswitchinterval() <= PIPELINE_SWITCH_INTERVAL_S
    cancelled.close()  # a cancel: the generator is closed before its end
    assert sys.getswitchinterval() == before
