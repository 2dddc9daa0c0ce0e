"""Batching across requests: a bounded queue and one decode thread.

Requests wait in a queue; the decode thread takes the oldest request together with every
queued request that shares its group (same model, same search options), up to ``max_batch``
lines, and decodes them as one call. Search results never depend on the batch, so a request's
output is the same whether it was decoded alone or with others.

Gathering: when the decoder is free and the oldest request's group is not full, it waits until
``max_wait`` seconds after that request arrived or after the decoder became free, whichever is
later, or until the requests it expects have come: those queued when the last decode ended
plus one for each request that decode answered (a client that got its answer sends its next
request). Counting from the decoder's release matters under load: without it, the clients
answered by one decode and those that waited through it would take turns, each half decoded
at half the batch. Traffic with one client at a time does not wait at all: the window opens
only while recent decodes served more than one request.

The queue is bounded in lines: a request that would overflow it is refused at once
(``QueueFull``) unless the queue is empty, so a single request of up to the per-request limit
is always accepted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds too many lines; ``retry_after`` estimates when to try again (seconds)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full; retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request: its lines, the group it may be batched with, and where its answer goes."""

    group: Hashable
    lines: list[str]
    payload: Any  # passed to the decode function (the model and search options)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    arrived: float = field(default_factory=time.monotonic)
    batch: tuple[int, int] = (0, 0)  # (requests, lines) of the decode that served it


DecodeFn = Callable[[list[Job]], list[Any]]  # one result per job, in order


class Batcher:
    """The queue and its decode thread. ``submit`` runs on the event loop; decoding never does."""

    def __init__(self, decode: DecodeFn, max_batch: int = 64, max_wait: float = 0.005, max_queue: int = 1024) -> None:
        self.decode, self.max_batch, self.max_wait, self.max_queue = decode, max_batch, max_wait, max_queue
        self._pending: deque[Job] = deque()
        self._queued_lines = 0
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._free_since = time.monotonic()  # when the last decode ended
        self._expected = 1  # requests to wait for: queued then + answered by it
        self._recent = 1.0  # moving average of requests per decode: opens the gather window
        self._seconds_per_line = 0.002  # moving average, for Retry-After
        self.requests_per_decode: Counter[int] = Counter()
        self.rejected = 0
        self._before: Callable[[], None] | None = None
        self._thread = threading.Thread(target=self._run, name="mtkit-decode", daemon=True)

    def start(self, before: Callable[[], None] | None = None) -> None:
        """Start the decode thread; ``before`` runs first on it (e.g. loading the models)."""
        self._before = before
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise ``QueueFull``."""
        with self._cond:
            if self._closing:
                raise QueueFull(1)
            if self._pending and self._queued_lines + len(job.lines) > self.max_queue:
                self.rejected += 1
                backlog = (self._queued_lines + self.max_batch) * self._seconds_per_line
                raise QueueFull(max(1, round(backlog + 0.5)))
            self._pending.append(job)
            self._queued_lines += len(job.lines)
            self._cond.notify()

    def cancel(self, job: Job) -> bool:
        """Take a job out of the queue (its request timed out); False if it is being decoded."""
        with self._cond:
            try:
                self._pending.remove(job)
            except ValueError:
                return False
            self._queued_lines -= len(job.lines)
            return True

    def close(self, timeout: float | None = None) -> None:
        """Decode what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            decodes = sum(self.requests_per_decode.values())
            served = sum(n * count for n, count in self.requests_per_decode.items())
            return {
                "queued_requests": len(self._pending),
                "queued_lines": self._queued_lines,
                "decoding": self._busy,
                "decodes": decodes,
                "requests": served,
                "requests_per_decode": {str(n): c for n, c in sorted(self.requests_per_decode.items())},
                "mean_requests_per_decode": round(served / decodes, 2) if decodes else 0.0,
                "rejected_queue_full": self.rejected,
            }

    # -- the decode thread ------------------------------------------------------------------

    def _run(self) -> None:
        if self._before is not None:
            self._before()
        while (batch := self._next_batch()) is not None:
            self._serve(batch)

    def _next_batch(self) -> list[Job] | None:
        with self._cond:
            self._busy = False
            while not self._pending:
                if self._closing:
                    return None
                self._cond.wait()
            if self._recent > 1.2:  # concurrent traffic: give the oldest group time to fill up
                deadline = max(self._pending[0].arrived, self._free_since) + self.max_wait
                while (not self._closing and len(self._pending) < self._expected
                       and self._group_lines(self._pending[0].group) < self.max_batch):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch = self._take(self._pending[0].group)
            self._busy = True
            return batch

    def _group_lines(self, group: Hashable) -> int:
        return sum(len(job.lines) for job in self._pending if job.group == group)

    def _take(self, group: Hashable) -> list[Job]:
        """The group's jobs in arrival order up to ``max_batch`` lines (always at least one)."""
        batch, lines = [], 0
        for job in list(self._pending):
            if job.group != group:
                continue
            if batch and lines + len(job.lines) > self.max_batch:
                break
            batch.append(job)
            lines += len(job.lines)
            self._pending.remove(job)
        self._queued_lines -= lines
        return batch

    def _serve(self, batch: list[Job]) -> None:
        lines = sum(len(job.lines) for job in batch)
        for job in batch:
            job.batch = (len(batch), lines)
        started = time.monotonic()
        try:
            results: list[Any] = self.decode(batch)
        except Exception as exc:  # noqa: BLE001 - the requests get the error, the server lives on
            results = [exc] * len(batch)
        ended = time.monotonic()
        spent = ended - started
        with self._cond:
            self._free_since, self._expected = ended, len(self._pending) + len(batch)
            self.requests_per_decode[len(batch)] += 1
            self._recent = 0.8 * self._recent + 0.2 * len(batch)
            self._seconds_per_line = 0.9 * self._seconds_per_line + 0.1 * spent / max(lines, 1)
        for job, result in zip(batch, results):
            job.loop.call_soon_threadsafe(_resolve, job.future, result)


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():  # the request timed out meanwhile
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)
