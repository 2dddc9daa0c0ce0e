"""Attention over encoder outputs: Luong's multiplicative and Bahdanau's additive scores.

Both take precomputed keys (projected once per source batch) and a validity mask, so weights
sum to 1 over real source tokens and are exactly 0 on padding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dimension, restricted to positions where ``mask`` is true."""
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


class LuongAttention(nn.Module):
    """score(q, k) = qᵀ W k (``general``) or qᵀ k (``dot``); queries come after the decoder RNN.

    Works on many queries at once, so training attends for all target steps in one batched
    matrix product instead of a loop over time.
    """

    def __init__(self, query_size: int, memory_size: int, score: str = "general") -> None:
        super().__init__()
        if score == "dot" and query_size != memory_size:
            raise ValueError(
                f"dot attention needs equal sizes (decoder {query_size}, encoder {memory_size}); use general"
            )
        self.proj = nn.Linear(memory_size, query_size, bias=False) if score == "general" else None

    def keys(self, memory: Tensor) -> Tensor:
        """W k for every source position (B, S, query_size), computed once per batch."""
        return self.proj(memory) if self.proj is not None else memory

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``query`` (B, T, Q) → context (B, T, C) and weights (B, T, S)."""
        weights = masked_softmax(torch.bmm(query, keys.transpose(1, 2)), mask[:, None, :])
        return torch.bmm(weights, values), weights


class BahdanauAttention(nn.Module):
    """score(q, k) = vᵀ tanh(W_q q + W_k k); the query is the decoder state before each step.

    Computed as (2v)ᵀ σ(2 W_q q + 2 W_k k): since tanh(a) = 2σ(2a) − 1, that differs from the
    score only by Σv, the same for every source position, which the softmax ignores. The keys
    are stored doubled (``keys``). The weights are the same; the work per decoder step is an
    addition and a sigmoid over (source positions × units) instead of PyTorch's tanh, a slow
    kernel on CPUs, and its largest elementwise cost there.
    """

    def __init__(self, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(memory_size, attention_size, bias=False)
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)
        self.v = nn.Linear(attention_size, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory) * 2

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """``query`` (B, Q) → context (B, C) and weights (B, S)."""
        hidden = (keys + self.query_proj(query)[:, None, :] * 2).sigmoid_()
        weights = masked_softmax(F.linear(hidden, self.v.weight * 2).squeeze(-1), mask)
        return torch.bmm(weights[:, None, :], values).squeeze(1), weights
