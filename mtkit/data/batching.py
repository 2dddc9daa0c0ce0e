"""Length-bucketed batches and padded tensors.

Sentences are sorted by length (random order among equal lengths) and cut into batches that
fill a token budget, so little of each batch is padding; the order of batches is shuffled per
epoch. Everything depends only on (seed, epoch): an interrupted run resumes on the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        if torch.device(device).type == "cpu":
            return self
        return Batch(*(t.to(device, non_blocking=True) for t in (self.src, self.src_lengths, self.tgt_in, self.tgt_out)), self.indices)


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


def make_batch(split: EncodedSplit, indices: list[int], truncate: int | None = None) -> Batch:
    src, src_lengths = pad_sequences([split.src(i) for i in indices], EOS, truncate)
    tgt_out, _ = pad_sequences([split.tgt(i) for i in indices], EOS, truncate)
    tgt_in = torch.cat([torch.full((len(indices), 1), BOS, dtype=torch.int64), tgt_out[:, :-1]], dim=1)
    tgt_in.masked_fill_(tgt_in == EOS, PAD)  # <eos> is never an input
    return Batch(src, src_lengths, tgt_in, tgt_out, torch.tensor(indices, dtype=torch.int64))


def bucket_batches(
    src_lengths: Tensor,
    tgt_lengths: Tensor,
    batch_tokens: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    epoch: int = 0,
    truncate: int | None = None,
    min_sentences: int = 1,
) -> list[list[int]]:
    """Split example indices into length-bucketed batches, in a shuffled order.

    With ``batch_tokens`` a batch holds as many sentences as fit ``n · longest target ≤ budget``
    (counting ``<eos>``); with ``batch_size`` it holds that many sentences. Each example appears
    exactly once. A batch smaller than ``min_sentences`` (one per process in distributed
    training) joins its neighbour.
    """
    if (batch_tokens is None) == (batch_size is None):
        raise ValueError("give exactly one of batch_tokens and batch_size")
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    src_len = src_lengths + 1
    tgt_len = tgt_lengths + 1
    if truncate is not None:
        src_len, tgt_len = src_len.clamp(max=truncate), tgt_len.clamp(max=truncate)
    order = torch.randperm(len(tgt_len), generator=generator)
    order = order[torch.sort(src_len[order], stable=True).indices]
    order = order[torch.sort(tgt_len[order], stable=True).indices].tolist()
    lengths = tgt_len.tolist()
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        full = (
            len(current) >= batch_size
            if batch_size is not None
            else (len(current) + 1) * lengths[index] > batch_tokens
        )
        if full and len(current) >= min_sentences:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        if len(current) < min_sentences and batches:
            batches[-1].extend(current)
        else:
            batches.append(current)
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def shuffled_batches(
    count: int, batch_size: int, seed: int = 0, epoch: int = 0, min_sentences: int = 1
) -> list[list[int]]:
    """The book's batches (a DataLoader with ``shuffle=True``): all ``count`` examples in a new
    random order each epoch, cut into consecutive batches of ``batch_size``; the last may be
    smaller, and joins its neighbour when smaller than ``min_sentences``. Depends only on
    (seed, epoch), like ``bucket_batches``."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(count, generator=generator).tolist()
    batches = [order[start : start + batch_size] for start in range(0, count, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < min_sentences:
        batches[-2].extend(batches.pop())
    return batches
