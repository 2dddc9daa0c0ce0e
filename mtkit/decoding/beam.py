"""Batched beam search with the book's length-normalised scoring.

All sentences × K beams advance in one tensor operation per step. A hypothesis ends when it
emits ``<eos>`` (or is forced to at its sentence's length limit) and is scored by
``log P(y | x) / lp(L)``, where L counts the tokens including ``<eos>`` and lp is the book's
L^α or GNMT's ((5 + L) / 6)^α. A sentence stops when no live beam can still beat its best
finished hypothesis, and leaves the batch then, so the others run on a smaller batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.data.vocab import BOS, EOS, unspeakable
from mtkit.decoding.greedy import check_every
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.decoding.prefix import Prefixes, forced_step_top
from mtkit.models.rnn import map_state
from mtkit.models.seq2seq import Seq2Seq

LENGTH_PENALTIES = ("book", "gnmt")


def length_penalty(length: float | Tensor, alpha: float, kind: str = "book"):
    """The divisor of log P: L^α (the book) or ((5 + L) / 6)^α (GNMT)."""
    if kind == "book":
        return length**alpha
    if kind == "gnmt":
        return ((5 + length) / 6) ** alpha
    raise ValueError(f"unknown length penalty {kind!r}; choose from {', '.join(LENGTH_PENALTIES)}")


@torch.inference_mode()
def beam_search(
    model: Seq2Seq,
    src: Tensor,
    src_lengths: Tensor,
    max_lengths: Tensor,
    beam_size: int,
    alpha: float = 0.75,
    penalty: str = "book",
    nbest: int = 1,
    no_unk: bool = False,
    prefixes: Prefixes | None = None,
) -> list[list[Hypothesis]]:
    """The ``nbest`` best hypotheses of every sentence, best first (each starting with its
    sentence's prefix, with ``prefixes``)."""
    device = src.device
    batch, k = src.size(0), beam_size
    memory, state = model.encode(src, src_lengths)
    expand = torch.arange(batch, device=device).repeat_interleave(k)
    memory = memory.index_select(expand)
    state = map_state(state, lambda s: s.index_select(1, expand))

    sentence = torch.arange(batch)  # original index of each sentence in the running batch
    limits = max_lengths.to(torch.int64).clone()
    # Cumulative log-probabilities of the live beams; only beam 0 is alive at the start so the
    # first step does not pick K copies of the same token.
    scores = torch.full((batch, k), float("-inf"), device=device)
    scores[:, 0] = 0.0
    history = torch.empty(batch, k, 0, dtype=torch.int64, device=device)
    prev = torch.full((batch * k,), BOS, dtype=torch.int64, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    # Per sentence of the running batch: the score a live beam must beat to enter its n-best
    # list, and whether it is done (its beams then stay at -inf until it leaves the batch).
    threshold = torch.full((batch,), float("-inf"))
    done = torch.zeros(batch, dtype=torch.bool)
    banned = unspeakable(no_unk)
    # The best K continuations that do not end, and the <eos> among the best K, are among each
    # beam's own best K + 1 tokens (at most one better token of a beam is <eos>): only those
    # K × (K + 1) candidates are ranked, never all K × V.
    width = min(k + 1, model.generator.out_features - len(banned))
    every = check_every(device)
    pending: list[tuple] = []

    step = 0
    while len(sentence):
        step += 1
        forced = prefixes.forced(step, sentence, beams=k) if prefixes is not None else None
        row_scores, row_tokens, eos, state = forced_step_top(model, prev, memory, state, width, banned, forced)
        # At a sentence's length limit only <eos> remains possible.
        at_limit = limits <= step
        if at_limit.any():
            forced = at_limit.to(device).repeat_interleave(k)
            row_scores[forced] = float("-inf")
            row_scores[forced, 0] = eos[forced]
            row_tokens[forced, 0] = EOS
        candidates = (scores[:, :, None] + row_scores.view(-1, k, width)).view(-1, k * width)
        top_scores, top_index = candidates.topk(2 * k, dim=1)
        top_beam = top_index // width
        top_token = row_tokens.view(-1, k * width).gather(1, top_index)
        is_eos = (top_token == EOS) & (top_scores > float("-inf"))
        # Candidates ending in <eos> among the top K become finished hypotheses, read (one wait
        # for the device) when the search next looks at which sentences are done.
        pending.append((step, is_eos[:, :k], top_beam, top_scores, history))

        # The best K candidates that do not end continue as the live beams.
        order = torch.arange(2 * k, device=device).expand_as(top_scores) + is_eos * (2 * k)
        keep = order.topk(k, dim=1, largest=False).indices
        scores = top_scores.gather(1, keep).masked_fill(is_eos.gather(1, keep), float("-inf"))
        beam_source = top_beam.gather(1, keep)
        new_tokens = top_token.gather(1, keep)
        history = torch.cat([history.gather(1, beam_source[:, :, None].expand(-1, -1, history.size(2))), new_tokens[:, :, None]], dim=2)
        flat_source = (beam_source + torch.arange(len(sentence), device=device)[:, None] * k).view(-1)
        state = map_state(state, lambda s: s.index_select(1, flat_source))
        prev = new_tokens.view(-1)
        if step % every:
            continue
        for ended in pending:
            _collect(finished, threshold, sentence, *ended, nbest, alpha, penalty)
        pending.clear()

        # A sentence is done when no live beam can beat its (n-th) best finished hypothesis. A live
        # beam's log-probability can only fall, and the largest divisor it can still reach is
        # the penalty at the length limit, so that is its best possible final score.
        best_live = scores.max(dim=1).values.cpu()
        bound = best_live / length_penalty(limits.float(), alpha, penalty)
        done |= (threshold >= bound) | (limits <= step) | (best_live == float("-inf"))
        count = int(done.sum())
        if count and 8 * count >= len(sentence):  # leave the batch
            alive = (~done).nonzero().squeeze(1)
            alive_device = alive.to(device)
            sentence, limits, threshold, done = sentence[alive], limits[alive], threshold[alive], done[alive]
            scores, history = scores[alive_device], history[alive_device]
            rows = (alive_device[:, None] * k + torch.arange(k, device=device)).view(-1)
            memory = memory.index_select(rows)
            state = map_state(state, lambda s: s.index_select(1, rows))
            prev = prev.index_select(0, rows)
        elif count:  # stay, inert: no beam of theirs can finish or win any more
            scores[done.to(device)] = float("-inf")
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]


def _collect(
    finished: list[list[Hypothesis]], threshold: Tensor, sentence: Tensor, step: int, ended: Tensor,
    top_beam: Tensor, top_scores: Tensor, history: Tensor, nbest: int, alpha: float, penalty: str,
) -> None:
    """Add the candidates that ended with <eos> among step ``step``'s top K to their sentences'
    finished hypotheses (a few tensor operations for all of them, then plain Python)."""
    where = ended.nonzero()
    if not len(where):
        return
    rows, ranks = where.unbind(1)
    beams = top_beam[rows, ranks]
    divisor = length_penalty(step, alpha, penalty)
    rows_cpu = rows.cpu()
    lists = rows_cpu.tolist(), sentence[rows_cpu].tolist(), history[rows, beams].tolist(), top_scores[rows, ranks].tolist()
    for row, original, tokens, log_prob in zip(*lists):
        hyps = finished[original]
        hyps.append(Hypothesis(tokens, log_prob, log_prob / divisor))
        if len(hyps) >= nbest:
            threshold[row] = sorted((h.score for h in hyps), reverse=True)[nbest - 1]
