"""Search: greedy, beam and exhaustive, with batching that never lets sentences interact.

``decode`` sorts sentences by length, runs the search batch by batch and restores input order,
so an output depends only on its own input, never on the batch size or its neighbours. The
search code only needs ``Seq2Seq.encode`` and ``Seq2Seq.step``, whatever the encoder/decoder.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from mtkit.data.batching import pad_sequences
from mtkit.data.vocab import EOS
from mtkit.decoding.beam import LENGTH_PENALTIES, beam_search
from mtkit.decoding.exhaustive import exhaustive_search
from mtkit.decoding.greedy import greedy_search
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.errors import UsageError
from mtkit.models.seq2seq import Seq2Seq

SEARCHES = ("beam", "exhaustive")


@dataclass
class SearchOptions:
    """How to search. ``beam`` 1 is greedy; outputs are at most ``max_len_a · |src| + max_len_b``
    tokens (counting ``<eos>``); hypotheses are ranked by log P / lp(length) with the book's
    lp = L^alpha or GNMT's ((5 + L) / 6)^alpha."""

    search: str = "beam"
    beam: int = 1
    alpha: float = 0.75
    length_penalty: str = "book"
    nbest: int = 1
    max_len_a: float = 2.0
    max_len_b: int = 10
    no_unk: bool = False

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise UsageError(f"--search must be one of {', '.join(SEARCHES)}")
        if self.length_penalty not in LENGTH_PENALTIES:
            raise UsageError(f"--length-penalty must be one of {', '.join(LENGTH_PENALTIES)}")
        if self.search == "exhaustive" and self.beam != 1:
            raise UsageError("--search exhaustive scores every output: it takes no --beam")
        if self.beam < 1 or self.nbest < 1 or self.nbest > self.beam and self.search == "beam":
            raise UsageError(f"need 1 <= --nbest <= --beam (got nbest {self.nbest}, beam {self.beam})")
        if self.alpha < 0:
            raise UsageError("--alpha must be >= 0")

    def batch_size(self) -> int:
        """Sentences per batch when none is given: about 512 rows of beams, which keeps the
        output layer's products large without slowing the beam bookkeeping."""
        return max(16, 512 // self.beam) if self.search == "beam" else 1

    def max_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        return (src_lengths.double() * self.max_len_a + self.max_len_b).floor().long().clamp(min=1)


def search_batch(model: Seq2Seq, src: torch.Tensor, src_lengths: torch.Tensor, options: SearchOptions) -> list[list[Hypothesis]]:
    """The n-best lists of one padded batch."""
    limits = options.max_lengths(src_lengths.cpu())
    if options.search == "exhaustive":
        return exhaustive_search(model, src, src_lengths, limits, options.alpha, options.length_penalty, options.nbest, options.no_unk)
    if options.beam == 1:
        return [[hyp] for hyp in greedy_search(model, src, src_lengths, limits, options.no_unk)]
    return beam_search(model, src, src_lengths, limits, options.beam, options.alpha, options.length_penalty, options.nbest, options.no_unk)


def decode(
    model: Seq2Seq,
    sources: Sequence[Sequence[int]],
    options: SearchOptions,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    workers: int = 1,
) -> list[list[Hypothesis]]:
    """Translate id sequences (without ``<eos>``); n-best lists come back in input order.

    ``workers`` > 1 searches that many batches at once, in threads that each run PyTorch's ops
    on one core (CPU translation: the ops release the GIL, and a decoder step's many small ops
    gain little from being split across cores). Batches are made small enough that every
    thread gets one, and the ops run on one core even where there is only one batch, so no
    op's arithmetic depends on the number of cores. Each thread runs under the caller's
    autocast.
    """
    batch_size = batch_size or options.batch_size()
    if workers > 1:
        batch_size = min(batch_size, max(1, math.ceil(len(sources) / workers)))
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]), reverse=True)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    device_type = torch.device(device).type
    amp = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)

    def search(batch: list[int]) -> list[list[Hypothesis]]:
        with torch.inference_mode(), torch.autocast(device_type, dtype=amp[1], enabled=amp[0]):
            src, src_lengths = pad_sequences([torch.as_tensor(sources[i], dtype=torch.int64) for i in batch], EOS)
            return search_batch(model, src.to(device), src_lengths.to(device), options)

    was_training = model.training
    model.eval()
    try:
        if workers > 1:
            with one_thread_per_op(), ThreadPoolExecutor(min(workers, len(batches) or 1)) as pool:
                found = list(pool.map(search, batches))
        else:
            found = [search(batch) for batch in batches]
    finally:
        model.train(was_training)
    results: list[list[Hypothesis]] = [[] for _ in sources]
    for batch, hyps in zip(batches, found):
        for i, h in zip(batch, hyps):
            results[i] = h
    return results


@contextmanager
def one_thread_per_op() -> Iterator[None]:
    """Run PyTorch's CPU ops on the calling thread alone, for the duration (process-wide)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
