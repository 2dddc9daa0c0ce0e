"""Tokenisers: the book's word splitting and SentencePiece subwords, behind one interface.

A tokeniser maps normalised text to ids (no ``<bos>``/``<eos>``) and ids back to text.
``TextProcessor`` adds the normalisation scheme and language so that one object turns raw input
into ids and model output into detokenised text.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sentencepiece as spm

from mtkit.data.normalize import normalize, restore_spacing
from mtkit.data.vocab import BOS, EOS, PAD, SPECIALS, UNK, Vocab
from mtkit.errors import DataError
from mtkit.fileio import read_bytes

TOKENIZERS = ("word", "sentencepiece")
# SentencePiece's model depends on how many threads trained it: a fixed count makes the same data
# give the same model on any machine (and for any --workers), and keeps up to 16 cores busy.
SPM_THREADS = 16
_HIDDEN = {PAD, BOS, EOS}


class Tokenizer(Protocol):
    kind: str
    vocab: Vocab

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def pieces(self, ids: Iterable[int]) -> list[str]: ...


class WordTokenizer:
    """The book's tokens: the normalised text split on single spaces."""

    kind = "word"

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab

    @staticmethod
    def split(text: str) -> list[str]:
        return [token for token in text.split(" ") if token]

    @classmethod
    def train(cls, texts: Iterable[str], min_freq: int) -> WordTokenizer:
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(cls.split(text))
        return cls.from_counts(counts, min_freq)

    @classmethod
    def from_counts(cls, counts: Counter[str], min_freq: int) -> WordTokenizer:
        return cls(Vocab.build(counts, min_freq=min_freq))

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(self.split(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.vocab.encode(self.split(text)) for text in texts]

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.vocab.tokens[i] for i in ids if i not in _HIDDEN]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.pieces(ids))


class SentencePieceTokenizer:
    """SentencePiece (unigram or BPE) with mtkit's special ids and an exact round trip.

    Training uses the identity normalisation rule (mtkit normalises beforehand) and byte fallback,
    so ``decode(encode(text)) == text`` for any normalised text, unseen characters included.
    """

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes) -> None:
        self.model_proto = model_proto
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        size = self.processor.get_piece_size()
        self.vocab = Vocab([self.processor.id_to_piece(i) for i in range(size)])

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str = "unigram") -> SentencePieceTokenizer:
        sentences = [t for t in texts if t]
        if not sentences:
            raise DataError("no text to train a SentencePiece model on")
        return cls._train(vocab_size, model_type, sentence_iterator=iter(sentences))

    @classmethod
    def train_file(
        cls, path: str | Path, vocab_size: int, model_type: str = "unigram", keep: tuple[int, int] | None = None
    ) -> SentencePieceTokenizer:
        """Train on the lines of a file (a sample written by ``preprocess``); with ``keep=(k, n)``,
        on ``k`` of its ``n`` lines, evenly spaced."""
        size = Path(path).stat().st_size
        if not size:
            raise DataError("no text to train a SentencePiece model on")
        kept, lines_in_file = keep or (1, 1)
        with open(path, encoding="utf-8") as handle:
            # An iterator, not input=path: the model would record the path. Over 2^31
            # characters the unigram trainer needs 64-bit suffix-array indices.
            lines = (line.rstrip("\n") for i, line in enumerate(handle)
                     if (i + 1) * kept // lines_in_file > i * kept // lines_in_file)
            large = size * kept // lines_in_file >= 1 << 31
            return cls._train(vocab_size, model_type, sentence_iterator=lines, train_extremely_large_corpus=large)

    @classmethod
    def _train(cls, vocab_size: int, model_type: str, **inputs) -> SentencePieceTokenizer:
        model = io.BytesIO()
        # SentencePiece raises when vocab_size is unreachable for a small corpus: let it pick the
        # largest reachable size instead (hard_vocab_limit=False).
        try:
            spm.SentencePieceTrainer.train(
                **inputs,
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                normalization_rule_name="identity",
                remove_extra_whitespaces=False,
                byte_fallback=True,
                character_coverage=0.9995,
                hard_vocab_limit=False,
                pad_id=PAD,
                unk_id=UNK,
                bos_id=BOS,
                eos_id=EOS,
                pad_piece=SPECIALS[PAD],
                unk_piece=SPECIALS[UNK],
                bos_piece=SPECIALS[BOS],
                eos_piece=SPECIALS[EOS],
                unk_surface=SPECIALS[UNK],
                input_sentence_size=0,  # every sentence given: preprocess samples beforehand
                num_threads=SPM_THREADS,
                minloglevel=2,
            )
        except RuntimeError as exc:
            detail = str(exc).split("] ")[-1].split(" Increase")[0]
            raise DataError(
                f"cannot train a SentencePiece model with vocabulary size {vocab_size}: {detail} "
                "(byte fallback needs 256 pieces plus one per character)"
            ) from None
        return cls(model.getvalue())

    def save(self, path: str | Path) -> None:
        from mtkit.fileio import atomic_write

        with atomic_write(path, binary=True) as handle:
            handle.write(self.model_proto)

    def encode(self, text: str) -> list[int]:
        return self.processor.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """One call for many sentences, on one thread (preprocess runs one worker per core)."""
        return self.processor.encode(texts, out_type=int, num_threads=1)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.vocab.tokens[i] for i in ids if i not in _HIDDEN]

    def decode(self, ids: Iterable[int]) -> str:
        return self.processor.decode([i for i in ids if i not in _HIDDEN])


@dataclass
class TextProcessor:
    """Normalisation + tokenisation for one side of a language pair."""

    lang: str
    scheme: str
    tokenizer: WordTokenizer | SentencePieceTokenizer

    def normalize(self, text: str) -> str:
        return normalize(text, self.scheme)

    def encode(self, raw: str) -> list[int]:
        return self.tokenizer.encode(self.normalize(raw))

    def decode(self, ids: Sequence[int]) -> str:
        """Detokenised text: tokens joined, the scheme's inserted spaces removed."""
        return restore_spacing(self.tokenizer.decode(ids), self.scheme, self.lang)

    def tokens(self, ids: Sequence[int]) -> str:
        """The raw tokens or pieces, space-separated (``translate --tokenized``)."""
        return " ".join(self.tokenizer.pieces(ids))


@dataclass
class TokenizerPair:
    """Tokenisers made before preprocessing (a trained run's, for fine-tuning it) for
    ``preprocess`` to encode with instead of training new ones."""

    src: WordTokenizer | SentencePieceTokenizer
    tgt: WordTokenizer | SentencePieceTokenizer
    origin: str  # where they come from, recorded in the data directory's manifest


def load_tokenizer(kind: str, path: str | Path) -> WordTokenizer | SentencePieceTokenizer:
    data = read_bytes(path, "vocabulary file" if kind == "word" else "SentencePiece model")
    return tokenizer_from_bytes(kind, data, path)


def tokenizer_from_bytes(kind: str, data: bytes, origin: object) -> WordTokenizer | SentencePieceTokenizer:
    """A tokeniser from the bytes of its file (a vocabulary or a SentencePiece model); errors
    name ``origin``."""
    if kind == "word":
        return WordTokenizer(Vocab.from_bytes(data, origin))
    if kind == "sentencepiece":
        try:
            return SentencePieceTokenizer(data)
        except RuntimeError as exc:
            raise DataError(f"not a SentencePiece model ({exc})", origin) from None
    raise DataError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(TOKENIZERS)}")
