"""The encoder: embeddings → a (deep, optionally bidirectional) RNN → memory for the decoder."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from mtkit.data.vocab import PAD
from mtkit.models.rnn import RNN, State, top_layer
from mtkit.models.shortlist import VocabSubset


@dataclass
class Memory:
    """What the decoder reads from the encoder, batch-first.

    ``context`` is the book's fixed context c: the top layer's state at each sentence's last
    valid step (both directions concatenated). ``keys`` are the attention projections of
    ``outputs``, filled in by the decoder once per batch; ``vocab`` the output tokens a
    shortlist lets each row use (``mtkit.models.shortlist``).
    """

    outputs: Tensor  # (B, S, C)
    mask: Tensor  # (B, S) true on real tokens
    context: Tensor  # (B, C)
    keys: Tensor | None = None
    vocab: VocabSubset | None = None  # a shortlist's restriction of the output layer

    def index_select(self, index: Tensor) -> Memory:
        """Rows ``index`` of every field (used to expand a batch into beams)."""
        keys = self.keys.index_select(0, index) if self.keys is not None else None
        vocab = self.vocab.index_select(index) if self.vocab is not None else None
        return replace(
            self,
            outputs=self.outputs.index_select(0, index),
            mask=self.mask.index_select(0, index),
            context=self.context.index_select(0, index),
            keys=keys,
            vocab=vocab,
        )


class Encoder(nn.Module):
    """Embeddings and a recurrent stack. Padding is packed away, so a sentence encodes the same
    in any batch; with ``source_steps`` the encoder instead runs, as the book's does, over every
    source padded or cut to that many tokens, <pad>s included (whose embedding it then learns):
    the final state and the fixed context depend on the padding, the same for every batch."""

    def __init__(
        self, cell: str, vocab_size: int, embed: int, hidden: int, layers: int,
        dropout: float, bidirectional: bool, impl: str, source_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.source_steps = source_steps
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=None if source_steps else PAD)
        self.rnn = RNN(cell, embed, hidden, layers, dropout, bidirectional, impl)
        self.output_size = self.rnn.output_size

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Memory, State]:
        if self.source_steps:
            src = pad_or_cut(src, self.source_steps)
            outputs, final = self.rnn(self.embedding(src))
        else:
            outputs, final = self.rnn(self.embedding(src), lengths)
        mask = src != PAD
        return Memory(outputs, mask, top_layer(final)), final


def pad_or_cut(src: Tensor, width: int) -> Tensor:
    """``src`` (B, S) with exactly ``width`` columns: cut, or padded with <pad> on the right."""
    if src.size(1) >= width:
        return src[:, :width]
    return torch.cat([src, src.new_full((src.size(0), width - src.size(1)), PAD)], dim=1)
