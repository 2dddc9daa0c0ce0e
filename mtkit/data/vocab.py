"""Token vocabularies: specials first, then tokens by frequency, saved as plain text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from mtkit.errors import DataError
from mtkit.fileio import read_bytes, write_lines

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD, UNK, BOS, EOS = range(len(SPECIALS))


def unspeakable(no_unk: bool = False) -> list[int]:
    """Tokens a search never outputs: padding and <bos>, and <unk> when asked (--no-unk)."""
    return [PAD, BOS, UNK] if no_unk else [PAD, BOS]


class Vocab:
    """A bijection between tokens and ids; ids 0-3 are ``<pad> <unk> <bos> <eos>``."""

    def __init__(self, tokens: Sequence[str]) -> None:
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {' '.join(SPECIALS)}")
        self.tokens = list(tokens)
        self.index = {token: i for i, token in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            duplicates = sorted(t for t, n in Counter(self.tokens).items() if n > 1)
            raise ValueError(f"duplicate tokens in vocabulary: {duplicates[:5]}")

    @classmethod
    def build(cls, counts: Counter[str], min_freq: int = 1) -> Vocab:
        """Keep tokens seen at least ``min_freq`` times, most frequent first, ties by token."""
        kept = sorted(
            (t for t, n in counts.items() if n >= min_freq and t not in SPECIALS),
            key=lambda t: (-counts[t], t),
        )
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of tokens; unknown tokens, and text that merely spells a special, are ``<unk>``."""
        ids = [self.index.get(token, UNK) for token in tokens]
        return [UNK if i < len(SPECIALS) else i for i in ids]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def save(self, path: str | Path) -> None:
        write_lines(path, self.tokens)

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        return cls.from_bytes(read_bytes(path, "vocabulary file"), path)

    @classmethod
    def from_bytes(cls, data: bytes, origin: object) -> Vocab:
        """A vocabulary from the bytes of its file (one token a line); errors name ``origin``."""
        try:
            tokens = data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            raise DataError("vocabulary is not UTF-8 text", origin) from None
        if tokens and tokens[-1] == "":
            tokens.pop()
        try:
            return cls(tokens)
        except ValueError as exc:
            raise DataError(str(exc), origin) from None
