"""Greedy search: the most probable next token at each step, for a whole batch at once."""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.data.vocab import BOS, EOS, PAD, unspeakable
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.models.rnn import map_state
from mtkit.models.seq2seq import Seq2Seq


@torch.no_grad()
def greedy_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_lengths: Tensor, no_unk: bool = False
) -> list[Hypothesis]:
    """Decode until ``<eos>``, which is forced at each sentence's own length limit (counting
    ``<eos>``). Finished sentences leave the batch, so later steps only compute what is needed."""
    device = src.device
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    limits = max_lengths.to(device)
    steps = int(limits.max())
    out = torch.full((batch, steps), PAD, dtype=torch.int64, device=device)
    log_probs = torch.zeros(batch, dtype=torch.float64, device=device)
    active = torch.arange(batch, device=device)  # original row of each live sentence
    prev = torch.full((batch,), BOS, dtype=torch.int64, device=device)
    banned = unspeakable(no_unk)
    for step in range(steps):
        best, prev, eos, state = model.step_top(prev, memory, state, 1, banned)
        best, prev = best[:, 0], prev[:, 0]
        at_limit = limits[active] <= step + 1
        prev = torch.where(at_limit, torch.full_like(prev, EOS), prev)
        best = torch.where(at_limit, eos, best)
        out[active, step] = prev
        log_probs[active] += best.double()
        finished = prev == EOS
        if finished.any():
            keep = (~finished).nonzero().squeeze(1)
            if not len(keep):
                break
            active = active[keep]
            memory = memory.index_select(keep)
            state = map_state(state, lambda s: s.index_select(1, keep))
            prev = prev[keep]
    hypotheses = []
    for row, lp in zip(out.tolist(), log_probs.tolist()):
        tokens = row[: row.index(EOS)] if EOS in row else row
        hypotheses.append(Hypothesis(tokens, lp, lp))
    return hypotheses
