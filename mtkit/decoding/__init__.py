"""Search: greedy, beam and exhaustive, sampling, with batching that never lets sentences interact.

``decode`` sorts sentences by length, runs the search batch by batch and restores input order,
so an output depends only on its own input, never on the batch size or its neighbours. The
search code only needs ``encode``, ``step`` and ``step_top``, whatever the encoder/decoder, so
an ``Ensemble`` of models is searched by the same code; prefixes (``prefix.py``) and sampling
(``sampling.py``) plug into the same loops.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from mtkit.data.batching import pad_sequences
from mtkit.data.vocab import EOS
from mtkit.decoding.beam import LENGTH_PENALTIES, beam_search
from mtkit.decoding.ensemble import Ensemble, stack_sources
from mtkit.decoding.exhaustive import exhaustive_search
from mtkit.decoding.greedy import greedy_search
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.decoding.prefix import Prefixes
from mtkit.decoding.sampling import Sampling
from mtkit.errors import UsageError
from mtkit.models.seq2seq import Seq2Seq

SEARCHES = ("beam", "exhaustive")
Source = Union[Sequence[int], tuple[Sequence[int], ...]]  # an ensemble's: one sequence per model


@dataclass
class SearchOptions:
    """How to search. ``beam`` 1 is greedy; outputs are at most ``max_len_a · |src| + max_len_b``
    tokens (counting ``<eos>``); hypotheses are ranked by log P / lp(length) with the book's
    lp = L^alpha or GNMT's ((5 + L) / 6)^alpha. With ``sample``, outputs are drawn instead
    (``sampling.py``)."""

    search: str = "beam"
    beam: int = 1
    alpha: float = 0.75
    length_penalty: str = "book"
    nbest: int = 1
    max_len_a: float = 2.0
    max_len_b: int = 10
    no_unk: bool = False
    sample: str | None = None  # full, topk:K or nucleus:P: draw outputs instead of searching
    temperature: float = 1.0
    seed: int = 1

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
        self.sampling = Sampling.parse(self.sample, self.temperature, self.seed) if self.sample else None
        if self.sampling is not None and (self.search != "beam" or self.beam != 1 or self.nbest != 1):
            raise UsageError("--sample draws one output per sentence: it takes no --beam, --nbest or --search")
        if self.sampling is None and (self.temperature != 1.0 or self.seed != 1):
            raise UsageError("--temperature and --seed are for --sample")

    def batch_size(self) -> int:
        """Sentences per batch when none is given: about 512 rows of beams, which keeps the
        output layer's products large without slowing the beam bookkeeping."""
        return max(16, 512 // self.beam) if self.search == "beam" else 1

    def max_lengths(self, src_lengths: torch.Tensor) -> torch.Tensor:
        return (src_lengths.double() * self.max_len_a + self.max_len_b).floor().long().clamp(min=1)


def search_batch(
    model: Seq2Seq | Ensemble, src: Tensor, src_lengths: Tensor, options: SearchOptions,
    sentences: Sequence[int] = (), prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """The n-best lists of one padded batch; ``sentences`` number its sentences (sampling seeds
    each sentence by its number), ``prefixes`` are the tokens each output must start with."""
    limits = options.max_lengths(src_lengths.cpu())
    forcing = None
    if prefixes is not None:
        forcing = Prefixes(prefixes, src.device)
        limits = torch.maximum(limits, forcing.lengths + 1)  # room for the prefix and <eos>
    if options.search == "exhaustive":
        if forcing is not None:
            raise UsageError("--prefix works with greedy, beam search and sampling, not --search exhaustive")
        return exhaustive_search(model, src, src_lengths, limits, options.alpha, options.length_penalty, options.nbest, options.no_unk)
    if options.sampling is not None:
        sampler = options.sampling.sampler(sentences, limits, src.device)
        return [[hyp] for hyp in greedy_search(model, src, src_lengths, limits, options.no_unk, sampler, forcing)]
    if options.beam == 1:
        return [[hyp] for hyp in greedy_search(model, src, src_lengths, limits, options.no_unk, prefixes=forcing)]
    return beam_search(model, src, src_lengths, limits, options.beam, options.alpha, options.length_penalty, options.nbest, options.no_unk, forcing)


def decode(
    model: Seq2Seq | Ensemble,
    sources: Sequence[Source],
    options: SearchOptions,
    batch_size: int | None = None,
    device: torch.device | str = "cpu",
    workers: int = 1,
    sentences: Sequence[int] | None = None,
    prefixes: Sequence[Sequence[int]] | None = None,
) -> list[list[Hypothesis]]:
    """Translate id sequences (without ``<eos>``; for an ``Ensemble``, a tuple of them, one per
    model); n-best lists come back in input order. ``sentences`` number the sources (by default
    0, 1, ...: sampling seeds each sentence by its number); ``prefixes`` force the start of
    each output.

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
    numbers = list(range(len(sources))) if sentences is None else list(sentences)
    ensemble = isinstance(model, Ensemble)
    order = sorted(range(len(sources)), key=lambda i: source_length(sources[i], ensemble), reverse=True)
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    device_type = torch.device(device).type
    amp = torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)

    def search(batch: list[int]) -> list[list[Hypothesis]]:
        with torch.inference_mode(), torch.autocast(device_type, dtype=amp[1], enabled=amp[0]):
            src, src_lengths = collate([sources[i] for i in batch], ensemble)
            forced = [prefixes[i] for i in batch] if prefixes is not None else None
            return search_batch(model, src.to(device), src_lengths.to(device), options, [numbers[i] for i in batch], forced)

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


def source_length(source: Source, ensemble: bool) -> int:
    """Tokens of a source (an ensemble's: of its longest encoding)."""
    return max(map(len, source)) if ensemble else len(source)


def collate(sources: Sequence[Source], ensemble: bool) -> tuple[Tensor, Tensor]:
    """A padded batch (B, S) of id sequences, each + ``<eos>``, or (B, M, S) of ensemble sources,
    and the lengths (B,)."""
    if ensemble:
        return stack_sources(sources)
    return pad_sequences([torch.as_tensor(s, dtype=torch.int64) for s in sources], EOS)


@contextmanager
def one_thread_per_op() -> Iterator[None]:
    """Run PyTorch's CPU ops on the calling thread alone, for the duration (process-wide)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
