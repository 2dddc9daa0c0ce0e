"""Exhaustive search: score every possible output up to the length limit (teaching, tests).

It is the reference beam search is measured against: with the same scoring, beam search with
a large enough beam must find the same best sequence. It refuses when |V|^T is too large.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mtkit.data.vocab import BOS, EOS, unspeakable
from mtkit.decoding.beam import length_penalty
from mtkit.decoding.hypothesis import Hypothesis
from mtkit.errors import UsageError
from mtkit.models.rnn import map_state
from mtkit.models.seq2seq import Seq2Seq

MAX_SEQUENCES = 1_000_000


@torch.inference_mode()
def exhaustive_search(
    model: Seq2Seq, src: Tensor, src_lengths: Tensor, max_lengths: Tensor,
    alpha: float = 0.75, penalty: str = "book", nbest: int = 1, no_unk: bool = False,
) -> list[list[Hypothesis]]:
    vocab = model.generator.out_features
    banned = set(unspeakable(no_unk))
    words = torch.tensor([t for t in range(vocab) if t not in banned | {EOS}], device=src.device)
    results = []
    for row in range(src.size(0)):
        limit = int(max_lengths[row])
        count = sum(len(words) ** n for n in range(limit))  # n tokens, then <eos>
        if count > MAX_SEQUENCES:
            raise UsageError(
                f"exhaustive search would score about 10^{len(str(count)) - 1} sequences (vocabulary "
                f"{vocab}, up to {limit} tokens), more than {MAX_SEQUENCES:,}: use beam search (--beam K)"
            )
        memory, state = model.encode(src[row : row + 1], src_lengths[row : row + 1])
        prefixes = torch.empty(1, 0, dtype=torch.int64, device=src.device)
        log_p = torch.zeros(1, device=src.device)
        prev = torch.full((1,), BOS, dtype=torch.int64, device=src.device)
        found: list[Hypothesis] = []
        for length in range(1, limit + 1):
            rows = torch.zeros(len(prefixes), dtype=torch.int64, device=src.device)
            step_log_probs, state, _ = model.step(prev, memory.index_select(rows), state)
            ended = log_p + step_log_probs[:, EOS]
            for tokens, lp in zip(prefixes.tolist(), ended.tolist()):
                found.append(Hypothesis(tokens, lp, lp / length_penalty(length, alpha, penalty)))
            if length == limit:
                break
            # Every prefix grows by every word.
            parent = torch.arange(len(prefixes), device=src.device).repeat_interleave(len(words))
            log_p = log_p[parent] + step_log_probs[:, words].reshape(-1)
            prev = words.repeat(len(prefixes))
            prefixes = torch.cat([prefixes[parent], prev[:, None]], dim=1)
            state = map_state(state, lambda s: s.index_select(1, parent))
        results.append(sorted(found, key=lambda h: -h.score)[:nbest])
    return results
