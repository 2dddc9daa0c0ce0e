"""Length-bucketed batches and padded tensors.

Sentences are sorted by length (random order among equal lengths) and cut into batches that
fill a token budget, so little of each batch is padding; the order of batches is shuffled per
epoch. The book's procedure instead cuts all sentences, in a new random order each epoch, into
batches of a fixed size (``shuffled_batches``). Everything depends only on (seed, epoch): an
interrupted run resumes on the same batches.
The plan of an epoch is a few flat arrays (no Python object per sentence), and ``make_batch`` is
a pure function of the split and the indices, so a background thread prepares the coming
updates (``updates``, run by ``mtkit.data.prefetch``) while the current one trains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mtkit.data.dataset import EncodedSplit
from mtkit.data.vocab import BOS, EOS, PAD


@dataclass
class Batch:
    """Padded, batch-first tensors of one batch; ``tgt_out`` is ``tgt_in`` shifted by one."""

    src: Tensor  # (B, S): tokens + <eos>
    src_lengths: Tensor  # (B,)
    tgt_in: Tensor  # (B, T): <bos> + tokens
    tgt_out: Tensor  # (B, T): tokens + <eos>
    indices: Tensor  # (B,) positions in the split

    @property
    def target_tokens(self) -> int:
        return int((self.tgt_out != PAD).sum())

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``; from pinned memory the copies do not wait. The source lengths
        stay on the CPU, where packing reads them: a GPU copy would be copied back, making every
        step wait for the GPU to finish the one before."""
        if torch.device(device).type == "cpu":
            return self
        src, tgt_in, tgt_out = (t.to(device, non_blocking=True) for t in (self.src, self.tgt_in, self.tgt_out))
        return Batch(src, self.src_lengths, tgt_in, tgt_out, self.indices)

    def pin_memory(self) -> Batch:
        """The batch in page-locked memory, which a GPU copies from without the CPU waiting."""
        return Batch(*(t.pin_memory() for t in (self.src, self.src_lengths, self.tgt_in, self.tgt_out)), self.indices)


def pad_sequences(seqs: list[Tensor], append: int | None = EOS, truncate: int | None = None) -> tuple[Tensor, Tensor]:
    """Stack id sequences into a (B, max_len) PAD-filled tensor, each + ``append``, cut to
    ``truncate`` tokens (the book's num_steps: a cut sequence loses its ``<eos>``)."""
    extra = 1 if append is not None else 0
    lengths = torch.tensor([len(s) + extra for s in seqs], dtype=torch.int64)
    if truncate is not None:
        lengths.clamp_(max=truncate)
    out = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), PAD, dtype=torch.int64)
    for row, (seq, length) in enumerate(zip(seqs, lengths.tolist())):
        body = min(len(seq), length)
        out[row, :body] = seq[:body]
        if body < length:
            out[row, body] = append
    return out, lengths


def make_batch(split: EncodedSplit, indices: Sequence[int] | np.ndarray | Tensor, truncate: int | None = None) -> Batch:
    """The batch of sentences ``indices``, gathered from the memory-mapped split in a few array
    operations."""
    indices = np.asarray(indices, dtype=np.int64)
    src, src_lengths = split.src.padded(indices, EOS, PAD, truncate)
    tgt_out, _ = split.tgt.padded(indices, EOS, PAD, truncate)
    tgt_in = np.concatenate([np.full((len(indices), 1), BOS, dtype=np.int64), tgt_out[:, :-1]], axis=1)
    tgt_in[tgt_in == EOS] = PAD  # <eos> is never an input
    return Batch(*(torch.from_numpy(a) for a in (src, src_lengths, tgt_in, tgt_out, indices)))


class BatchPlan(Sequence):
    """An epoch's batches: sentence indices sorted by length (``order``), cut at ``bounds``,
    visited in the shuffled order ``sequence``. ``plan[k]`` is the k-th batch's indices."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray, sequence: np.ndarray) -> None:
        self.order, self.bounds, self.sequence = order, bounds, sequence

    def __len__(self) -> int:
        return len(self.sequence)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return BatchPlan(self.order, self.bounds, self.sequence[k])
        b = int(self.sequence[k])
        return self.order[self.bounds[b] : self.bounds[b + 1]].astype(np.int64)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[k] for k in range(len(self)))


@dataclass
class Update:
    """One process's share of one optimiser step: batches ``start``..``end`` of the plan of
    ``epoch`` (``batches_in_epoch`` long) are the whole step, over every process."""

    epoch: int
    start: int
    end: int
    batches_in_epoch: int
    batches: list[Batch]  # this process's, their gradients summed in order
    tokens: int  # target tokens of the whole step, every process's batches: the loss divides by them
    stand_in: bool = False  # none was left for this process: batches[0] keeps it in step, weight 0

    def pin_memory(self) -> Update:
        return Update(self.epoch, self.start, self.end, self.batches_in_epoch,
                      [b.pin_memory() for b in self.batches], self.tokens, self.stand_in)


def updates(
    split: EncodedSplit, plan_of: Callable[[int], BatchPlan], epoch: int = 0, position: int = 0,
    world: int = 1, rank: int = 0, accumulate: int = 1, truncate: int | None = None,
) -> Iterator[Update]:
    """Process ``rank``'s updates from batch ``position`` of ``epoch`` on, epoch after epoch
    (``plan_of(epoch)`` is an epoch's plan). Each update takes the plan's next ``world`` ×
    ``accumulate`` batches, whole batches per process: process r trains on the r-th, (r +
    world)-th, ... of them, so that a step of ``world`` processes sees the batches one process
    accumulating ``world`` × ``accumulate`` would. The last update of an epoch may be smaller; a
    process left without a batch gets a stand-in with no weight (every process must take part
    in every exchange of gradients)."""
    group = world * accumulate
    while True:
        plan = plan_of(epoch)
        for start in range(position, len(plan), group):
            end = min(start + group, len(plan))
            step = [plan[k] for k in range(start, end)]
            mine = step[rank::world]
            batches = [make_batch(split, indices, truncate) for indices in (mine or step[:1])]
            tokens = split.target_tokens(np.concatenate(step), truncate)
            yield Update(epoch, start, end, len(plan), batches, tokens, stand_in=not mine)
        epoch, position = epoch + 1, 0


def bucket_batches(
    src_lengths: np.ndarray | Tensor,
    tgt_lengths: np.ndarray | Tensor,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    truncate: int | None = None,
) -> BatchPlan:
    """Split example indices into length-bucketed batches, in a shuffled order.

    With ``batch_tokens`` a batch holds as many sentences as fit ``n · longest target ≤ budget``
    (counting ``<eos>``); with ``batch_size`` it holds that many sentences. Each example appears
    exactly once.
    """
    if (batch_tokens is None) == (batch_size is None):
        raise ValueError("give exactly one of batch_tokens and batch_size")
    order, sorted_tgt = _length_order(np.asarray(src_lengths), np.asarray(tgt_lengths), seed, epoch, truncate)
    if batch_size is not None:
        starts = np.arange(0, len(order), batch_size)
    else:
        starts = _token_batch_starts(sorted_tgt, batch_tokens)
    bounds = np.append(np.asarray(starts, dtype=np.int64), len(order))
    rng = np.random.default_rng([seed, epoch, 1])
    return BatchPlan(order, bounds, rng.permutation(len(bounds) - 1))


def shuffled_batches(count: int, batch_size: int, seed: int = 0, epoch: int = 0) -> BatchPlan:
    """The book's batches (a DataLoader with ``shuffle=True``): all ``count`` examples in a new
    random order each epoch, cut into consecutive batches of ``batch_size``; the last may be
    smaller. Depends only on (seed, epoch), like ``bucket_batches``, and is the same kind of
    plan."""
    if count >= 1 << 32:
        raise ValueError("more than 2^32 sentences in one split")
    order = np.arange(count, dtype=np.uint32)
    np.random.default_rng([seed, epoch, 2]).shuffle(order)  # in place: 4 bytes per sentence
    bounds = np.append(np.arange(0, count, batch_size), count)
    return BatchPlan(order, bounds, np.arange(len(bounds) - 1))


def _token_batch_starts(lengths: np.ndarray, budget: int) -> list[int]:
    """Greedy cuts of ascending ``lengths``: a batch grows while (its size) × (its longest) fits
    the budget, and has at least one sentence. One small array operation per batch."""
    starts, start, n = [], 0, len(lengths)
    while start < n:
        room = max(budget // int(lengths[start]), 1)
        window = lengths[start : start + room].astype(np.int64) * np.arange(1, min(room, n - start) + 1)
        size = max(int(np.searchsorted(window, budget, side="right")), 1)
        starts.append(start)
        start += size
    return starts


_MASK32 = np.uint64(0xFFFFFFFF)
_MULTIPLIERS = (0x9E3779B1, 0x85EBCA77)


def _scramble(x: np.ndarray, keys: tuple[int, int], inverse: bool = False) -> np.ndarray:
    """A keyed bijection of 32-bit integers (multiply by odd constants, xor-shift, add): a
    random-looking order among sentences of equal length that can be undone after sorting."""
    x = x.astype(np.uint64)
    steps = [("mul", c) for c in _MULTIPLIERS]
    if not inverse:
        x = (x + np.uint64(keys[0])) & _MASK32
        for _, c in steps:
            x = (x * np.uint64(c)) & _MASK32
            x ^= x >> np.uint64(16)
        return (x + np.uint64(keys[1])) & _MASK32
    x = (x - np.uint64(keys[1])) & _MASK32
    for _, c in reversed(steps):
        x ^= x >> np.uint64(16)  # a shift by at least half the width undoes itself
        x = (x * np.uint64(pow(c, -1, 1 << 32))) & _MASK32
    return (x - np.uint64(keys[0])) & _MASK32


def _length_order(
    src_lengths: np.ndarray, tgt_lengths: np.ndarray, seed: int, epoch: int, truncate: int | None, chunk: int = 1 << 20
) -> tuple[np.ndarray, np.ndarray]:
    """Indices sorted by (target length, source length, a keyed scramble of the index) and the
    sorted target lengths (<eos> included). One uint64 key per sentence, sorted in place; built
    and unpacked a chunk at a time so temporaries stay small."""
    n = len(tgt_lengths)
    if n >= 1 << 32:
        raise ValueError("more than 2^32 sentences in one split")
    keys = tuple(int(k) for k in np.random.default_rng([seed, epoch]).integers(0, 1 << 32, size=2))
    limit = (1 << 16) - 1 if truncate is None else min(truncate, (1 << 16) - 1)
    packed = np.empty(n, dtype=np.uint64)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        tgt = np.minimum(tgt_lengths[a:b].astype(np.uint64) + np.uint64(1), np.uint64(limit))
        src = np.minimum(src_lengths[a:b].astype(np.uint64) + np.uint64(1), np.uint64(limit))
        packed[a:b] = (tgt << np.uint64(48)) | (src << np.uint64(32)) | _scramble(np.arange(a, b), keys)
    packed.sort()
    order = np.empty(n, dtype=np.uint32)
    sorted_tgt = np.empty(n, dtype=np.uint16)
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        order[a:b] = _scramble(packed[a:b] & _MASK32, keys, inverse=True)
        sorted_tgt[a:b] = packed[a:b] >> np.uint64(48)
    return order, sorted_tgt
