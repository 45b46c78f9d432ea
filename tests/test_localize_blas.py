"""localize.single_threaded_blas: overlapping jobs share one process-wide BLAS limit."""

import threading

import pytest

from napari_smlm_diffusion import localize


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
    monkeypatch.setattr(localize, "_blas_libraries", lambda: fake)
    return fake


def test_interleaved_jobs_restore_the_original_setting(blas):
    first, second = localize.single_threaded_blas(), localize.single_threaded_blas()
    first.__enter__()
    assert blas.threads == 1
    second.__enter__()
    first.__exit__(None, None, None)  # the first job ends while the second still runs
    assert blas.threads == 1
    second.__exit__(None, None, None)
    assert blas.threads == 4 and blas.limits_set == 1
    with localize.single_threaded_blas():  # a later job limits again
        assert blas.threads == 1
    assert blas.threads == 4


def test_threads_overlapping_in_any_order_leave_blas_as_found(blas):
    start = threading.Barrier(4)
    seen = []

    def job() -> None:
        start.wait()
        for _ in range(200):
            with localize.single_threaded_blas():
                seen.append(blas.threads)

    workers = [threading.Thread(target=job) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert set(seen) == {1} and len(seen) == 800
    assert blas.threads == 4


def test_an_error_inside_still_restores(blas):
    with pytest.raises(RuntimeError, match="failed"), localize.single_threaded_blas():
        raise RuntimeError("the job failed")
    assert blas.threads == 4
