"""Train/dev/test splits that never leak a source sentence from dev or test into train.

The split is decided from one 64-bit hash per pair (its source's group key, salted with the seed)
and the pair's position, so it works in passes over a corpus of any size with only the held-out
sentences in memory:

- ``grouped`` (default): the ``dev_size + test_size`` groups with the smallest hashes are held
  out, the smallest ``dev_size`` of them for dev. A group is every pair whose source is the same
  up to case, so no held-out source appears in train. The choice does not depend on the order of
  the corpus or on how it was read.
- ``ordered`` (the book's): file order; the last ``dev_size + test_size`` pairs are held out, dev
  first (sizes then count pairs, and a source may straddle the boundary, as in the book).
- ready-made dev/test files (``given``): every corpus pair trains.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SPLIT_MODES = ("grouped", "ordered")
TRAIN, DEV, TEST, UNUSED = 0, 1, 2, 3
ROLE_NAMES = {DEV: "dev", TEST: "test"}


@dataclass
class EvalSet:
    """A dev or test set: each source once, with all of its references."""

    sources: list[str]
    references: list[list[str]]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(s, r) for s, refs in zip(self.sources, self.references) for r in refs]

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> EvalSet:
        """Group repeated sources (first-appearance order) into multi-reference entries."""
        refs: dict[str, list[str]] = {}
        for src, tgt in pairs:
            refs.setdefault(src, []).append(tgt)
        return cls(list(refs), list(refs.values()))


def group_key(source: str) -> str:
    """Sources that differ only in case are one sentence: they must land in the same split."""
    return source.casefold()


def group_hashes(sources: Sequence[str], seed: int) -> np.ndarray:
    """The salted 64-bit hash of each source's group key."""
    salt = (seed % (1 << 64)).to_bytes(8, "little")
    digests = b"".join(hashlib.blake2b(group_key(s).encode(), digest_size=8, salt=salt).digest() for s in sources)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def smallest_distinct(hashes: Sequence[np.ndarray] | np.ndarray, k: int) -> np.ndarray:
    """The ``k`` smallest distinct values (sorted): per chunk, then over the chunks' results."""
    values = np.concatenate(hashes) if isinstance(hashes, (list, tuple)) else hashes
    return np.unique(values)[:k]


@dataclass
class SplitPlan:
    """Which pairs train, validate, test or go unused (beyond ``--max-examples``)."""

    mode: str  # grouped, ordered or given
    used: int  # pairs used, in corpus order
    dev_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    test_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    train_end: int = 0  # ordered: first held-out position
    dev_end: int = 0  # ordered: first test position
    leak_hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # held-out sources

    @classmethod
    def grouped(cls, used: int, smallest: np.ndarray, dev_size: int, test_size: int) -> SplitPlan:
        held_out = smallest[: dev_size + test_size]
        return cls("grouped", used, np.sort(held_out[:dev_size]), np.sort(held_out[dev_size:]), leak_hashes=held_out)

    @classmethod
    def ordered(cls, used: int, dev_size: int, test_size: int) -> SplitPlan:
        train_end = max(0, used - dev_size - test_size)
        return cls("ordered", used, train_end=train_end, dev_end=min(used, train_end + dev_size))

    def roles(self, keys: np.ndarray, base: int) -> np.ndarray:
        """The role (TRAIN, DEV, TEST, UNUSED) of the pairs at ``base, base + 1, ...`` with
        group hashes ``keys``."""
        position = np.arange(base, base + len(keys))
        roles = np.full(len(keys), TRAIN, dtype=np.uint8)
        if self.mode == "grouped":
            roles[np.isin(keys, self.dev_hashes)] = DEV
            roles[np.isin(keys, self.test_hashes)] = TEST
        elif self.mode == "ordered":
            roles[position >= self.train_end] = DEV
            roles[position >= self.dev_end] = TEST
        roles[position >= self.used] = UNUSED
        return roles


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash of each value."""
    x = x.astype(np.uint64)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class SampleChooser:
    """A seeded uniform sample of at most ``limit`` pairs, fed chunk by chunk: the pairs whose
    hashed position is smallest. Holds at most 2 × ``limit`` candidates."""

    def __init__(self, limit: int, seed: int) -> None:
        self.limit, self.salt = limit, np.uint64(_mix64(np.array([seed + 0x5EED]))[0])
        self.scores = np.zeros(0, np.uint64)
        self.positions = np.zeros(0, np.int64)

    def add(self, positions: np.ndarray) -> None:
        self.scores = np.concatenate([self.scores, _mix64(positions.astype(np.uint64) ^ self.salt)])
        self.positions = np.concatenate([self.positions, positions])
        if len(self.scores) > 2 * self.limit:
            self._shrink()

    def _shrink(self) -> None:
        keep = np.argpartition(self.scores, self.limit - 1)[: self.limit] if self.limit else []
        self.scores, self.positions = self.scores[keep], self.positions[keep]

    def chosen(self) -> np.ndarray:
        """The sample's positions, sorted."""
        if len(self.scores) > self.limit:
            self._shrink()
        return np.sort(self.positions)
