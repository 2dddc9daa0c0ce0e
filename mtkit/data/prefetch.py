"""Batches prepared ahead: an iterator run on a background thread, a few items ahead of use.

Training reads its updates through this, so gathering ids from the memory-mapped split, padding
and (on a GPU) copying into page-locked memory happen while the previous step computes, and
the next epoch's plan is built before the epoch starts. Items arrive in the order the iterator
made them; what was made ahead and not used is dropped on ``close``. The iterator must not
touch global random state (``mtkit.data.batching.updates`` depends only on seed and epoch), so
a resumed run, which starts a new iterator where the last one was used up to, sees the same
batches.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """``items`` made on a background thread, at most ``depth`` ahead of the consumer; each made
    item passes through ``prepare`` on that thread (e.g. pinning memory), after ``setup`` runs
    there once. An error in the thread is raised by ``next``. A context manager that closes."""

    def __init__(
        self, items: Iterator[T], depth: int = 2, prepare: Callable[[T], T] | None = None,
        setup: Callable[[], None] | None = None,
    ) -> None:
        self.items, self.prepare, self.setup = items, prepare, setup
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._work, name="mtkit-prefetch", daemon=True)
        self.thread.start()

    def _work(self) -> None:
        try:
            if self.setup is not None:
                self.setup()
            for item in self.items:
                if not self._put(item if self.prepare is None else self.prepare(item)):
                    return
            self._put(_END)
        except BaseException as error:  # raised again on the consumer's thread
            self._put(_Failed(error))

    def _put(self, item: object) -> bool:
        """Queue ``item`` unless closed meanwhile; False when closed."""
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        item = self.queue.get()
        if item is _END:
            self.queue.put(_END)  # stays exhausted
            raise StopIteration
        if isinstance(item, _Failed):
            self.queue.put(item)
            raise item.error
        return item

    def close(self) -> None:
        """Stop the thread (after the item it is making) and drop what it made ahead."""
        self.stopped.set()
        self.thread.join()
        while not self.queue.empty():
            self.queue.get_nowait()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
