"""Encoded splits on disk and the data directory that ``preprocess`` writes and ``train`` reads.

A data directory holds ``manifest.json``, one tokeniser file per side, the raw text of every split
(``train.en``/``train.fr``; ``dev.en``, ``dev.fr`` and ``dev.refs.jsonl`` with all references of
each source; the same for test) and the encoded splits (``*.ids.pt``: flat int32 ids + offsets,
loaded with ``weights_only=True`` in well under a second).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from mtkit.data.split import EvalSet
from mtkit.data.tokenizers import TextProcessor, load_tokenizer
from mtkit.errors import DataError
from mtkit.fileio import atomic_write, read_json


@dataclass
class EncodedSplit:
    """Token-id sequences of a split, stored flat; ``groups`` maps dev/test pairs to sources."""

    src_ids: torch.Tensor
    src_offsets: torch.Tensor
    tgt_ids: torch.Tensor
    tgt_offsets: torch.Tensor
    groups: torch.Tensor

    @classmethod
    def from_lists(
        cls, src: list[list[int]], tgt: list[list[int]], groups: list[int] | None = None
    ) -> EncodedSplit:
        def flat(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            lengths = torch.tensor([len(s) for s in seqs], dtype=torch.int64)
            offsets = torch.zeros(len(seqs) + 1, dtype=torch.int64)
            torch.cumsum(lengths, 0, out=offsets[1:])
            ids = torch.tensor([i for s in seqs for i in s], dtype=torch.int32)
            return ids, offsets

        src_ids, src_offsets = flat(src)
        tgt_ids, tgt_offsets = flat(tgt)
        group_t = torch.tensor(groups if groups is not None else range(len(src)), dtype=torch.int64)
        return cls(src_ids, src_offsets, tgt_ids, tgt_offsets, group_t)

    def __len__(self) -> int:
        return len(self.src_offsets) - 1

    @property
    def src_lengths(self) -> torch.Tensor:
        return self.src_offsets[1:] - self.src_offsets[:-1]

    @property
    def tgt_lengths(self) -> torch.Tensor:
        return self.tgt_offsets[1:] - self.tgt_offsets[:-1]

    def src(self, i: int) -> torch.Tensor:
        return self.src_ids[self.src_offsets[i] : self.src_offsets[i + 1]]

    def tgt(self, i: int) -> torch.Tensor:
        return self.tgt_ids[self.tgt_offsets[i] : self.tgt_offsets[i + 1]]

    def save(self, path: Path) -> None:
        with atomic_write(path, binary=True) as handle:
            torch.save(self.__dict__, handle)

    @classmethod
    def load(cls, path: Path) -> EncodedSplit:
        try:
            state = torch.load(path, weights_only=True)
            return cls(**state)
        except FileNotFoundError:
            raise DataError("encoded split not found; rerun `mtkit preprocess`", path) from None
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same message
            raise DataError(f"cannot read encoded split ({exc})", path) from None


def write_eval_set(directory: Path, split: str, src_lang: str, tgt_lang: str, data: EvalSet) -> None:
    """Sources, first references (for one-reference tools) and all references as JSON lines."""
    from mtkit.fileio import write_lines

    write_lines(directory / f"{split}.{src_lang}", data.sources)
    write_lines(directory / f"{split}.{tgt_lang}", [refs[0] for refs in data.references])
    write_lines(
        directory / f"{split}.refs.jsonl",
        [json.dumps(refs, ensure_ascii=False) for refs in data.references],
    )


class DataDir:
    """Read access to a preprocessed data directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise DataError("not a data directory (no manifest.json); create it with `mtkit preprocess`", self.path)
        self.manifest = read_json(self.path / "manifest.json")
        self.src_lang: str = self.manifest["src_lang"]
        self.tgt_lang: str = self.manifest["tgt_lang"]

    def processor(self, side: str) -> TextProcessor:
        info = self.manifest["tokenizers"][side]
        lang = self.src_lang if side == "src" else self.tgt_lang
        tokenizer = load_tokenizer(info["kind"], self.path / info["file"])
        return TextProcessor(lang, self.manifest["options"]["normalize"], tokenizer)

    def encoded(self, split: str) -> EncodedSplit:
        return EncodedSplit.load(self.path / f"{split}.ids.pt")

    def eval_set(self, split: str) -> EvalSet:
        sources = read_text_lines(self.path / f"{split}.{self.src_lang}")
        refs_file = self.path / f"{split}.refs.jsonl"
        references = [json.loads(line) for line in read_text_lines(refs_file)]
        if len(sources) != len(references):
            raise DataError(f"{len(sources)} sources but {len(references)} reference lines", refs_file)
        return EvalSet(sources, references)


def read_text_lines(path: Path) -> list[str]:
    """The lines of a file mtkit wrote, split on ``\n`` only: unlike ``fileio.read_lines`` (for
    text from users) a stray ``\r`` inside a sentence stays in it, keeping files aligned."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines
