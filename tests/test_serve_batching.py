"""The batching queue on its own: grouping by search options, full batches, the bound, errors,
cancellation and draining, with a decode function that the test holds back at will."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mtkit.serve.batching import Batcher, Job, QueueFull


class HeldDecoder:
    """Records each decode's jobs; blocks until ``gate`` is set."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.gate = threading.Event()
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, jobs: list[Job]) -> list:
        self.gate.wait(10)
        self.calls.append([job.payload for job in jobs])
        if any(job.payload == self.fail_on for job in jobs):
            raise RuntimeError("decoder failed")
        return [f"done {job.payload}" for job in jobs]


def submit(batcher: Batcher, name: str, group: str, lines: int) -> Job:
    loop = asyncio.get_running_loop()
    job = Job(group=group, lines=["x"] * lines, payload=name, future=loop.create_future(), loop=loop)
    batcher.submit(job)
    return job


async def until(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_batches_group_by_options_fill_up_to_max_batch_and_keep_arrival_order():
    decoder = HeldDecoder()
    batcher = Batcher(decoder, max_batch=4, max_wait=0)
    batcher.start()

    async def scenario():
        first = submit(batcher, "a1", "greedy", 1)
        await until(lambda: batcher.stats()["decoding"])  # a1 is being decoded: the rest queue
        jobs = [submit(batcher, *spec) for spec in
                (("a2", "greedy", 2), ("b1", "beam5", 1), ("a3", "greedy", 2), ("a4", "greedy", 1))]
        decoder.gate.set()
        return await asyncio.gather(first.future, *(job.future for job in jobs)), jobs

    answers, jobs = asyncio.run(scenario())
    batcher.close()
    assert answers == ["done a1", "done a2", "done b1", "done a3", "done a4"]
    assert decoder.calls == [["a1"], ["a2", "a3"], ["b1"], ["a4"]]  # a4 would overflow 4 lines
    assert [job.batch for job in jobs] == [(2, 4), (1, 1), (2, 4), (1, 1)]
    assert batcher.stats()["requests_per_decode"] == {"1": 3, "2": 1}


def test_under_load_requests_sent_after_a_decode_join_those_that_waited_through_it():
    """Closed-loop clients: the answered ones re-send while the others still wait. The window
    counts from the decoder's release, so both are decoded together, not in turns."""
    decoder = HeldDecoder()
    batcher = Batcher(decoder, max_batch=4, max_wait=1.0)
    batcher.start()

    async def scenario():
        held = submit(batcher, "h", "g", 1)
        await until(lambda: batcher.stats()["decoding"])
        warm = [submit(batcher, f"w{i}", "g", 1) for i in range(3)]
        decoder.gate.set()  # h alone, then w0-w2 together: concurrent traffic from now on
        await asyncio.gather(held.future, *(job.future for job in warm))
        decoder.gate.clear()
        first = submit(batcher, "d", "g", 1)
        await until(lambda: batcher.stats()["decoding"])
        waited = submit(batcher, "e1", "g", 1)
        await asyncio.sleep(1.2)  # e1 is now older than the window
        decoder.gate.set()
        await first.future
        resent = submit(batcher, "e2", "g", 1)  # a client answered by that decode
        return await asyncio.gather(waited.future, resent.future)

    assert asyncio.run(scenario()) == ["done e1", "done e2"]
    batcher.close()
    assert decoder.calls[-1] == ["e1", "e2"]


def test_the_queue_is_bounded_in_lines_but_always_takes_one_request():
    decoder = HeldDecoder()
    batcher = Batcher(decoder, max_batch=8, max_wait=0, max_queue=3)
    batcher.start()

    async def scenario():
        busy = submit(batcher, "busy", "g", 50)  # larger than the queue, but the queue is empty
        await until(lambda: batcher.stats()["decoding"])
        queued = [submit(batcher, "q1", "g", 2), submit(batcher, "q2", "g", 1)]
        with pytest.raises(QueueFull) as full:
            submit(batcher, "q3", "g", 1)
        assert full.value.retry_after >= 1
        assert batcher.cancel(queued[1])  # e.g. its request timed out
        late = submit(batcher, "q4", "g", 1)
        decoder.gate.set()
        return await asyncio.gather(busy.future, queued[0].future, late.future)

    assert asyncio.run(scenario()) == ["done busy", "done q1", "done q4"]
    batcher.close()
    assert batcher.stats()["rejected_queue_full"] == 1
    assert all("q2" not in call for call in decoder.calls)


def test_a_failing_decode_fails_its_requests_only():
    decoder = HeldDecoder(fail_on="bad")
    decoder.gate.set()
    batcher = Batcher(decoder, max_batch=1, max_wait=0)
    batcher.start()

    async def scenario():
        bad = submit(batcher, "bad", "g", 1)
        with pytest.raises(RuntimeError, match="decoder failed"):
            await bad.future
        return await submit(batcher, "good", "g", 1).future

    assert asyncio.run(scenario()) == "done good"
    batcher.close()


def test_close_decodes_what_is_queued_then_stops():
    decoder = HeldDecoder()
    batcher = Batcher(decoder, max_batch=2, max_wait=0)
    batcher.start()

    async def scenario():
        jobs = [submit(batcher, f"j{i}", "g", 1) for i in range(5)]
        await until(lambda: batcher.stats()["decoding"])
        closing = threading.Thread(target=batcher.close)
        closing.start()
        with pytest.raises(QueueFull):  # closing: nothing new is taken
            submit(batcher, "late", "g", 1)
        decoder.gate.set()
        answers = await asyncio.gather(*(job.future for job in jobs))
        closing.join(10)
        return answers

    assert asyncio.run(scenario()) == [f"done j{i}" for i in range(5)]
    assert batcher.stats()["decodes"] == 3 and not batcher._thread.is_alive()
