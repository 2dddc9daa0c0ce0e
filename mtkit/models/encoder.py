"""The encoder: embeddings → a (deep, optionally bidirectional) RNN → memory for the decoder."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    def __init__(
        self, cell: str, vocab_size: int, embed: int, hidden: int, layers: int,
        dropout: float, bidirectional: bool, impl: str,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        self.rnn = RNN(cell, embed, hidden, layers, dropout, bidirectional, impl)
        self.output_size = self.rnn.output_size

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Memory, State]:
        outputs, final = self.rnn(self.embedding(src), lengths)
        mask = src != PAD
        return Memory(outputs, mask, top_layer(final)), final
