"""Ensembles: several models searched as one, over the mean of their log-probabilities.

Each model keeps its own encoder, source tokeniser and decoder state; at every step each model
scores the next token and the search ranks tokens by (1/M) Σ_m log p_m(y | y_<t, x), so greedy,
beam and exhaustive search, sampling and prefixes run on an ensemble unchanged. A hypothesis's
log-probability is then the mean of the models' log-probabilities of it. The models must share
one target vocabulary. An ensemble's source is a tuple of its ids under each model's tokeniser,
and a batch of them a (B, M, S) tensor (``stack_sources``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mtkit.data.batching import pad_sequences
from mtkit.data.vocab import EOS, PAD
from mtkit.models.encoder import Memory
from mtkit.models.output import row_topk
from mtkit.models.rnn import State
from mtkit.models.seq2seq import Seq2Seq


@dataclass
class EnsembleMemory:
    """Each model's memory of the same batch."""

    members: list[Memory]

    def index_select(self, index: Tensor) -> EnsembleMemory:
        return EnsembleMemory([memory.index_select(index) for memory in self.members])


class Ensemble(nn.Module):
    """Models with one target vocabulary, decoded together (``Seq2Seq``'s search interface)."""

    def __init__(self, models: Sequence[Seq2Seq]) -> None:
        super().__init__()
        sizes = {model.generator.out_features for model in models}
        if len(sizes) != 1:
            raise ValueError(f"an ensemble needs one target vocabulary (sizes {sorted(sizes)})")
        self.members = nn.ModuleList(models)

    @property
    def generator(self) -> nn.Module:
        """The first model's output layer: the searches read the vocabulary size from it."""
        return self.members[0].generator

    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[EnsembleMemory, tuple[State, ...]]:
        """Encode each model's ids (``src[:, m]``, padded) with that model."""
        memories, states = [], []
        for m, model in enumerate(self.members):
            ids = src[:, m]
            lengths = (ids != PAD).sum(dim=1)
            memory, state = model.encode(ids[:, : int(lengths.max())], lengths)
            memories.append(memory)
            states.append(state)
        return EnsembleMemory(memories), tuple(states)

    def step(self, tokens: Tensor, memory: EnsembleMemory, state: tuple[State, ...]) -> tuple[Tensor, tuple[State, ...], None]:
        """The mean of the models' log-probabilities (B, V) of the next token, and the new states."""
        total, states = None, []
        for model, model_memory, model_state in zip(self.members, memory.members, state):
            log_probs, model_state, _ = model.step(tokens, model_memory, model_state)
            total = log_probs if total is None else total.add_(log_probs)
            states.append(model_state)
        return total.div_(len(self.members)), tuple(states), None

    def step_top(
        self, tokens: Tensor, memory: EnsembleMemory, state: tuple[State, ...], k: int, banned: list[int],
        extra: int | Tensor = EOS,
    ) -> tuple[Tensor, Tensor, Tensor, tuple[State, ...]]:
        """As ``Seq2Seq.step_top``, over the mean of the models' log-probabilities."""
        log_probs, state, _ = self.step(tokens, memory, state)
        if isinstance(extra, Tensor):
            extra_log_prob = log_probs.gather(1, extra[:, None]).squeeze(1)
        else:
            extra_log_prob = log_probs[:, extra].clone()
        log_probs.index_fill_(1, torch.tensor(banned, device=log_probs.device), float("-inf"))
        values, best = row_topk(log_probs, k)
        return values, best, extra_log_prob, state


def stack_sources(sources: Sequence[tuple[Sequence[int], ...]]) -> tuple[Tensor, Tensor]:
    """Ensemble sources (each a tuple of id sequences, one per model) as a PAD-filled (B, M, S)
    tensor, each sequence + ``<eos>``, and the longest length of each sentence (B,)."""
    models = len(sources[0])
    padded = [pad_sequences([torch.as_tensor(s[m], dtype=torch.int64) for s in sources], EOS) for m in range(models)]
    width = max(ids.size(1) for ids, _ in padded)
    src = torch.full((len(sources), models, width), PAD, dtype=torch.int64)
    for m, (ids, _) in enumerate(padded):
        src[:, m, : ids.size(1)] = ids
    return src, torch.stack([lengths for _, lengths in padded]).amax(dim=0)
