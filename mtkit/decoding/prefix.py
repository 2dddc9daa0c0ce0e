"""Prefixes: outputs forced to start with given target tokens, the rest searched as usual.

While a sentence is inside its prefix, each step offers the search one candidate, the prefix's
next token, with the model's log-probability for it, so reported scores stay log P(prefix +
rest | source); beam search keeps a single live beam until the prefix ends, then branches out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtkit.data.batching import pad_sequences
from mtkit.data.vocab import EOS, PAD


class Prefixes:
    """The target tokens each sentence of a batch must start with (none for an empty prefix)."""

    def __init__(self, prefixes: Sequence[Sequence[int]], device: torch.device) -> None:
        tokens, self.lengths = pad_sequences([torch.as_tensor(p, dtype=torch.int64) for p in prefixes], None)
        self.tokens = tokens.to(device)

    def forced(self, step: int, rows: Tensor, beams: int = 1) -> Tensor | None:
        """The token each of ``rows`` (sentences of the batch), or each of their ``beams``
        beams, must take at ``step`` (from 1), ``<pad>`` where it is free; None once every
        prefix has ended."""
        if step > self.tokens.size(1):
            return None
        return self.tokens[rows.to(self.tokens.device), step - 1].repeat_interleave(beams)


def forced_step_top(
    model, tokens: Tensor, memory, state, k: int, banned: list[int], forced: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, object]:
    """``model.step_top``, except that rows with a ``forced`` token (not ``<pad>``) get it as
    their only candidate, scored with its log-probability."""
    if forced is None:
        return model.step_top(tokens, memory, state, k, banned)
    free = forced == PAD
    values, best, extra, state = model.step_top(tokens, memory, state, k, banned, torch.where(free, EOS, forced))
    only = torch.full_like(values, float("-inf"))
    only[:, 0] = extra
    values = torch.where(free[:, None], values, only)
    best = torch.where(free[:, None], best, forced[:, None])
    return values, best, extra, state
