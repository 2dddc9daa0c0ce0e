"""A finished translation candidate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hypothesis:
    tokens: list[int]  # without <bos>/<eos>
    log_prob: float  # log P(tokens, <eos> | source) under the model
    score: float  # what the search ranked by (log_prob, length-normalised for beam search)
