"""Greedy search: the most probable next token at each step, for a whole batch at once."""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.data.vocab import BOS, EOS, PAD, unspeakable
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.decoding.prefix import Prefixes, forced_step_top
from mtkit.decoding.sampling import Sampler
from mtkit.models.rnn import map_state
from mtkit.models.seq2seq import Seq2Seq


def check_every(device: torch.device) -> int:
    """How often a search reads which sentences have finished: each step on a CPU, where that
    costs nothing; every 4th on a GPU, where reading a result waits for all queued work."""
    return 1 if device.type == "cpu" else 4


@torch.inference_mode()
def greedy_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_lengths: Tensor, no_unk: bool = False,
    sampler: Sampler | None = None, prefixes: Prefixes | None = None,
) -> list[Hypothesis]:
    """Decode until ``<eos>``, which is forced at each sentence's own length limit (counting
    ``<eos>``). Finished sentences stop contributing at once and leave the batch once they are
    an eighth of it, so later steps compute little more than what is needed, and the batch is
    not copied at every step. With a ``sampler`` each token is drawn instead of the most
    probable one; with ``prefixes`` each output starts with its sentence's prefix."""
    device = src.device
    memory, state = model.encode(src, src_lengths)
    batch = src.size(0)
    steps = int(max_lengths.max())
    out = torch.full((batch, steps), PAD, dtype=torch.int64, device=device)
    log_probs = torch.zeros(batch, dtype=torch.float64, device=device)
    rows = torch.arange(batch, device=device)  # original row of each row of the running batch
    limits = max_lengths.to(device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    prev = torch.full((batch,), BOS, dtype=torch.int64, device=device)
    banned = unspeakable(no_unk)
    every = check_every(device)
    for step in range(steps):
        forced = prefixes.forced(step + 1, rows) if prefixes is not None else None
        if sampler is not None:
            best, prev, eos, state = sampler.step(model, prev, memory, state, banned, rows, step, forced)
        else:
            best, prev, eos, state = forced_step_top(model, prev, memory, state, 1, banned, forced)
            best, prev = best[:, 0], prev[:, 0]
        at_limit = limits <= step + 1
        prev = torch.where(at_limit, EOS, prev)
        best = torch.where(at_limit, eos, best)
        out[rows, step] = torch.where(finished, PAD, prev)
        log_probs[rows] += best.double().masked_fill_(finished, 0.0)
        finished |= prev == EOS
        if (step + 1) % every:
            continue
        done = int(finished.sum())
        if done == len(rows):
            break
        if done and 8 * done >= len(rows):
            keep = (~finished).nonzero().squeeze(1)
            rows, limits, finished, prev = rows[keep], limits[keep], finished[keep], prev[keep]
            memory = memory.index_select(keep)
            state = map_state(state, lambda s: s.index_select(1, keep))
    hypotheses = []
    for row, lp in zip(out.tolist(), log_probs.tolist()):
        tokens = row[: row.index(EOS)] if EOS in row else row
        hypotheses.append(Hypothesis(tokens, lp, lp))
    return hypotheses
