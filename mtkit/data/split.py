"""Train/dev/test splits that never leak a source sentence from dev or test into train."""

from __future__ import annotations

import random
from dataclasses import dataclass

SPLIT_MODES = ("grouped", "ordered")


@dataclass
class EvalSet:
    """A dev or test set: each source once, with all of its references."""

    sources: list[str]
    references: list[list[str]]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(s, r) for s, refs in zip(self.sources, self.references) for r in refs]

    @property
    def groups(self) -> list[int]:
        """For each pair of ``pairs``, the index of its source."""
        return [i for i, refs in enumerate(self.references) for _ in refs]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> EvalSet:
        """Group repeated sources (first-appearance order) into multi-reference entries."""
        refs: dict[str, list[str]] = {}
        for src, tgt in pairs:
            refs.setdefault(src, []).append(tgt)
        return cls(list(refs), list(refs.values()))


def group_key(source: str) -> str:
    """Sources that differ only in case are one sentence: they must land in the same split."""
    return source.casefold()


def split_pairs(
    pairs: list[tuple[str, str]], dev_size: int, test_size: int, mode: str = "grouped", seed: int = 1
) -> tuple[list[tuple[str, str]], EvalSet, EvalSet]:
    """Split into train pairs and dev/test sets of ``dev_size``/``test_size`` source sentences.

    ``grouped`` shuffles whole source groups with ``seed``; ``ordered`` keeps file order and
    takes dev and test from the end, as the book does (its sizes then count pairs, and a source
    may straddle the train/dev boundary just as in the book).
    """
    if mode == "ordered":
        n_train = max(0, len(pairs) - dev_size - test_size)
        dev = pairs[n_train : n_train + dev_size]
        test = pairs[n_train + dev_size :]
        return pairs[:n_train], EvalSet.from_pairs(dev), EvalSet.from_pairs(test)
    if mode != "grouped":
        raise ValueError(f"unknown split mode {mode!r}; choose from {', '.join(SPLIT_MODES)}")
    by_key: dict[str, list[int]] = {}
    for i, (src, _) in enumerate(pairs):
        by_key.setdefault(group_key(src), []).append(i)
    keys = list(by_key)
    random.Random(seed).shuffle(keys)
    dev_keys = keys[:dev_size]
    test_keys = keys[dev_size : dev_size + test_size]
    held_out = set(dev_keys) | set(test_keys)

    def eval_set(chosen: list[str]) -> EvalSet:
        # Keep the corpus order inside a set: easier to read, independent of the shuffle.
        indices = sorted(i for key in chosen for i in by_key[key])
        return EvalSet.from_pairs([pairs[i] for i in indices])

    train = [pair for pair in pairs if group_key(pair[0]) not in held_out]
    return train, eval_set(dev_keys), eval_set(test_keys)


def leaked_sources(train: list[tuple[str, str]], held_out: EvalSet) -> int:
    """How many held-out sources also occur (up to case) as a training source."""
    train_keys = {group_key(src) for src, _ in train}
    return sum(group_key(src) in train_keys for src in held_out.sources)
