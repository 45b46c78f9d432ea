"""Process-wide settings that overlapping jobs share: BLAS on one thread for localization, a
short GIL switch interval while the CNN and the localization run side by side in threads.

The first job to enter a setting applies it and the last one to leave restores what it found
(thread-safe), so jobs that overlap in time (two widgets, a widget and a script) never leave the
setting behind, nor lift it while another job still relies on it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from threadpoolctl import ThreadpoolController

#: GIL switch interval while the CNN and the localization run in two threads (seconds; Python's
#: default is 0.005). The localization runs many short numpy calls that keep the GIL; with the
#: default interval the CNN's thread waits up to 5 ms for it after each layer. Measured
#: (`benchmarks/bench_dense_localization.py`): see docs/benchmarks.md.
PIPELINE_SWITCH_INTERVAL_S = 0.0005


class SharedSetting:
    """A reference-counted process-wide setting: ``apply()`` sets it and returns the function
    that restores the previous state."""

    def __init__(self, apply: Callable[[], Callable[[], None]]) -> None:
        self._apply = apply
        self._lock = threading.Lock()
        self._users = 0
        self._restore: Callable[[], None] | None = None

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._restore = self._apply()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and self._restore is not None:
                    self._restore()
                    self._restore = None


@cache
def _blas_libraries() -> ThreadpoolController:
    return ThreadpoolController()


def _limit_blas_to_one_thread() -> Callable[[], None]:
    return _blas_libraries().limit(limits=1, user_api="blas").restore_original_limits


def _shorten_switch_interval() -> Callable[[], None]:
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, PIPELINE_SWITCH_INTERVAL_S))
    return lambda: sys.setswitchinterval(previous)


#: Context in which BLAS and LAPACK use one thread. The dense solves of localization are at most
#: a few hundred wide: more threads gain little there, and when the other core is busy (the CNN,
#: another job) their waiting made localization about ten times slower (measured).
single_threaded_blas = SharedSetting(_limit_blas_to_one_thread)

#: Context with the GIL switch interval at most :data:`PIPELINE_SWITCH_INTERVAL_S`.
short_gil_switch_interval = SharedSetting(_shorten_switch_interval)
