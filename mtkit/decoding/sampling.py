"""Sampling: outputs drawn token by token from the model's distribution (back-translation).

``full`` draws from the whole distribution, ``topk:K`` from the K most probable tokens,
``nucleus:P`` from the fewest most probable tokens whose probabilities reach P (Holtzman et al.,
2020), each after the log-probabilities are divided by the temperature. Each sentence draws its
random numbers from a generator of its own, seeded by the seed and the sentence's number (its
line in the input), so its sample is the same in any batch, with any batch or buffer size and
any thread count. A sample's reported score is its log-probability under the model, untempered
and untruncated, as for the other searches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mtkit.data.vocab import EOS, PAD
from mtkit.errors import UsageError

KINDS = ("full", "topk", "nucleus")


@dataclass(frozen=True)
class Sampling:
    """How to sample: ``kind`` with its ``value`` (K or P), the temperature and the seed."""

    kind: str
    value: float = 0.0
    temperature: float = 1.0
    seed: int = 1

    @classmethod
    def parse(cls, spec: str, temperature: float = 1.0, seed: int = 1) -> Sampling:
        """``full``, ``topk:K`` (K ≥ 1) or ``nucleus:P`` (0 < P ≤ 1)."""
        kind, _, value = spec.partition(":")
        usage = f"--sample must be full, topk:K or nucleus:P (got {spec!r})"
        if kind not in KINDS or (kind == "full") != (value == ""):
            raise UsageError(usage)
        try:
            number = float(value) if value else 0.0
        except ValueError:
            raise UsageError(usage) from None
        if kind == "topk" and (number < 1 or not number.is_integer()):
            raise UsageError(f"--sample topk:K needs a whole K >= 1 (got {value})")
        if kind == "nucleus" and not 0 < number <= 1:
            raise UsageError(f"--sample nucleus:P needs 0 < P <= 1 (got {value})")
        if not temperature > 0:
            raise UsageError(f"--temperature must be > 0 (got {temperature})")
        return cls(kind, number, temperature, seed)

    def sampler(self, sentences: Sequence[int], limits: Tensor, device: torch.device) -> Sampler:
        """The sampler of a batch: ``sentences`` are the batch's sentence numbers, ``limits``
        their output lengths. Each sentence draws as many numbers as its own limit needs, so
        its draws do not depend on the other sentences."""
        steps = int(limits.max()) if len(limits) else 0
        uniforms = torch.zeros(len(sentences), steps, dtype=torch.float64)
        for row, (sentence, limit) in enumerate(zip(sentences, limits.tolist())):
            generator = torch.Generator().manual_seed(sentence_seed(self.seed, sentence))
            uniforms[row, :limit] = torch.rand(limit, generator=generator, dtype=torch.float64)
        return Sampler(self, uniforms.to(device))


def sentence_seed(seed: int, sentence: int) -> int:
    """A 64-bit seed for one sentence, the same on every platform and Python version."""
    digest = hashlib.blake2b(f"{seed}/{sentence}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class Sampler:
    """Draws the next token of each row of a batch from its own random numbers."""

    def __init__(self, sampling: Sampling, uniforms: Tensor) -> None:
        self.sampling = sampling
        self.uniforms = uniforms  # (sentences, steps) in [0, 1)

    def step(
        self, model, tokens: Tensor, memory, state, banned: list[int], rows: Tensor, step: int,
        forced: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, object]:
        """Draw the next token of each of ``rows`` (sentences of the batch) at ``step`` (from 0),
        or take its ``forced`` one (not ``<pad>``): the tokens' log-probabilities under the
        model, the tokens, the log-probability of ``<eos>`` and the new state."""
        log_probs, state, _ = model.step(tokens, memory, state)
        eos = log_probs[:, EOS].clone()
        drawn = self.draw(log_probs, banned, self.uniforms[rows, step])
        if forced is not None:
            drawn = torch.where(forced == PAD, drawn, forced)
        return log_probs.gather(1, drawn[:, None]).squeeze(1), drawn, eos, state

    def draw(self, log_probs: Tensor, banned: list[int], uniforms: Tensor) -> Tensor:
        """One token per row of ``log_probs`` (B, V), by inverse transform sampling: the first
        token whose cumulative probability exceeds the row's uniform number."""
        kind, value = self.sampling.kind, self.sampling.value
        scores = log_probs.index_fill(1, torch.tensor(banned, device=log_probs.device), float("-inf"))
        scores = scores.div_(self.sampling.temperature)
        order = None
        if kind == "topk":
            scores, order = scores.topk(min(int(value), scores.size(1)), dim=1)
        elif kind == "nucleus":
            scores, order = scores.sort(dim=1, descending=True, stable=True)
            probs = torch.softmax(scores.double(), dim=1)
            before = probs.cumsum(dim=1) - probs  # what the more probable tokens hold
            scores = scores.masked_fill(before >= value, float("-inf"))  # the most probable stays
        probs = torch.softmax(scores.double(), dim=1)
        cumulative = probs.cumsum(dim=1)
        target = (uniforms * cumulative[:, -1]).unsqueeze(1)
        choice = torch.searchsorted(cumulative, target, right=True).squeeze(1)
        # A rounding at the very top of the range may land past the last possible token.
        last_possible = (probs > 0).cumsum(dim=1).argmax(dim=1)
        choice = torch.minimum(choice, last_possible)
        return choice if order is None else order.gather(1, choice[:, None]).squeeze(1)
