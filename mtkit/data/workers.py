"""Worker processes for ``preprocess``: chunks go out in order and results come back in order,
with a bounded number in flight so that memory does not grow with the corpus."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mtkit.errors import MtkitError


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _worker_signals() -> None:
    """Ctrl-C reaches the whole process group: only the main process acts on it (and stops the
    workers). SIGTERM ends a worker at once; so does the main process's death (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Workers:
    """``map`` over ``workers`` processes (in this process when ``workers`` is 1)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        if workers > 1:
            # fork starts workers at once; nothing here holds locks or threads when it happens.
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=_worker_signals)
            list(self.pool.map(int, range(workers)))  # start them now, before any other thread

    def map(self, function: Callable[..., Any], tasks: Iterable[tuple], ahead: int | None = None) -> Iterator[Any]:
        """``function(*task)`` for each task, results in task order; at most ``ahead`` tasks
        (default: two per worker) are submitted beyond the one being waited for."""
        if self.pool is None:
            for task in tasks:
                yield function(*task)
            return
        pending: deque[Future] = deque()
        limit = ahead or 2 * self.workers
        try:
            for task in tasks:
                pending.append(self.pool.submit(function, *task))
                if len(pending) > limit:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool:
            raise MtkitError("a preprocess worker process died (killed, or out of memory?); nothing was written") from None
        finally:  # stopped early (or failed): drop what has not started
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_) -> None:
        self.close()
