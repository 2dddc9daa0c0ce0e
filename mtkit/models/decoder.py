"""Decoders: the book's fixed-context GRU/LSTM, Luong attention, Bahdanau attention.

``forward`` consumes a whole teacher-forced target (training); ``step`` advances one token
(search). Both return pre-output features; the output layer lives in ``Seq2Seq``.

- ``none`` (the book): input [embedding; context c] at every step, c fixed for the sentence.
- ``luong``: attention comes after the RNN, so training attends for all steps in one batched
  product: features = tanh(W_c [h_t; attn(h_t)]). The RNN input is the embedding alone, or with
  ``context_input`` also the book's fixed context c (which costs no loop and speeds learning).
- ``bahdanau``: attention queried with the previous state feeds the RNN input, which forces a
  loop over time steps in training too: features = tanh(W_c [h_t; ctx_t]).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mtkit.data.vocab import PAD
from mtkit.models.attention import BahdanauAttention, LuongAttention
from mtkit.models.encoder import Memory
from mtkit.models.rnn import RNN, State, top_layer

ATTENTIONS = ("none", "bahdanau", "luong")


class Decoder(nn.Module):
    def __init__(
        self, cell: str, vocab_size: int, embed: int, hidden: int, layers: int, dropout: float,
        impl: str, memory_size: int, attention: str = "none", attention_score: str = "general",
        context_input: bool = False,
    ) -> None:
        super().__init__()
        self.kind = attention
        self.embedding = nn.Embedding(vocab_size, embed, padding_idx=PAD)
        # The fixed context c goes into every input step without attention (the book), and with
        # Luong attention when asked; Bahdanau's input carries its attention context instead.
        self.context_input = attention == "none" or (attention == "luong" and context_input)
        rnn_input = embed if attention == "luong" and not self.context_input else embed + memory_size
        self.rnn = RNN(cell, rnn_input, hidden, layers, dropout, impl=impl)
        self.attention: LuongAttention | BahdanauAttention | None = None
        if attention == "luong":
            self.attention = LuongAttention(hidden, memory_size, attention_score)
        elif attention == "bahdanau":
            self.attention = BahdanauAttention(hidden, memory_size, hidden)
        elif attention != "none":
            raise ValueError(f"unknown attention {attention!r}; choose from {', '.join(ATTENTIONS)}")
        self.combine = nn.Linear(hidden + memory_size, hidden) if self.attention else None
        self.output_size = hidden

    def prepare(self, memory: Memory) -> Memory:
        """Project the attention keys once per source batch. In search under autocast, the
        attention values are cast to its dtype here once, not at every step (training keeps the
        per-step casts, whose gradients add up in fp32)."""
        if self.attention is not None:
            device = memory.outputs.device.type
            if not torch.is_grad_enabled() and torch.is_autocast_enabled(device):
                memory.outputs = memory.outputs.to(torch.get_autocast_dtype(device))
            memory.keys = self.attention.keys(memory.outputs)
        return memory

    def forward(self, tgt_in: Tensor, memory: Memory, state: State) -> tuple[Tensor, State]:
        """Teacher forcing over ``tgt_in`` (B, T): features (B, T, H) and the final state."""
        embedded = self.embedding(tgt_in)
        if self.context_input:
            embedded = torch.cat([embedded, memory.context[:, None, :].expand(-1, embedded.size(1), -1)], dim=-1)
        if self.kind == "none":
            return self.rnn(embedded, state=state)
        if self.kind == "luong":
            outputs, state = self.rnn(embedded, state=state)
            context, _ = self.attention(outputs, memory.keys, memory.outputs, memory.mask)
            return torch.tanh(self.combine(torch.cat([outputs, context], dim=-1))), state
        features = []
        for t in range(embedded.size(1)):
            feature, state, _ = self._bahdanau_step(embedded[:, t], memory, state)
            features.append(feature)
        return torch.stack(features, dim=1), state

    def step(self, tokens: Tensor, memory: Memory, state: State) -> tuple[Tensor, State, Tensor | None]:
        """One step from the previous tokens (B,): features (B, H), new state, attention (B, S)."""
        embedded = self.embedding(tokens)
        if self.kind == "bahdanau":
            return self._bahdanau_step(embedded, memory, state)
        if self.context_input:
            embedded = torch.cat([embedded, memory.context], dim=-1)
        output, state = self.rnn.step(embedded, state)
        if self.kind == "none":
            return output, state, None
        context, weights = self.attention(output[:, None], memory.keys, memory.outputs, memory.mask)
        features = torch.tanh(self.combine(torch.cat([output, context[:, 0]], dim=-1)))
        return features, state, weights[:, 0]

    def _bahdanau_step(self, embedded: Tensor, memory: Memory, state: State) -> tuple[Tensor, State, Tensor]:
        context, weights = self.attention(top_layer(state), memory.keys, memory.outputs, memory.mask)
        output, state = self.rnn.step(torch.cat([embedded, context], dim=-1), state)
        features = torch.tanh(self.combine(torch.cat([output, context], dim=-1)))
        return features, state, weights
