"""Encoded splits on disk and the data directory that ``preprocess`` writes and ``train`` reads.

A data directory holds ``manifest.json``, one tokeniser file per side, the text of every split
(``train.en``/``train.fr``; ``dev.en``, ``dev.fr`` and ``dev.refs.jsonl`` with all references of
each source; the same for test) and the encoded splits, one binary file per split and side
(``train.src.ids``, ``train.tgt.ids``, ``dev.src.ids``, ...). Training maps these files into
memory: only the lengths are read whole, a sentence's ids when a batch needs them, and every
process on a machine shares the same pages.

Layout of an ``.ids`` file (little-endian; each section starts at a multiple of 64 bytes)::

    header (64 bytes)  b"MTKITIDS", format version (u16), bytes per id (u8: 2 = uint16, 4 = int32),
                       bytes per length (u8: 2 = uint16, 4 = uint32), index stride S (u32),
                       sentences N (u64), tokens T (u64), CRC-32 of everything after the header
                       (u32), zeros
    lengths            N lengths: the tokens of each sentence, without <eos>
    index              N // S + 1 token offsets (u64) of sentences 0, S, 2S, ...
    ids                T token ids, sentence after sentence

A sentence's ids start at ``index[i // S]`` plus the lengths of the sentences between: the
index costs 8/S bytes per sentence where a full offset table would cost 8.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mtkit.data.split import EvalSet
from mtkit.data.tokenizers import TextProcessor, load_tokenizer
from mtkit.errors import DataError
from mtkit.fileio import read_json

MAGIC = b"MTKITIDS"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sHBBIQQI")  # magic, version, id bytes, length bytes, stride, N, T, crc
HEADER_BYTES = 64
INDEX_STRIDE = 64
ALIGN = 64
ID_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<i4")}
LENGTH_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}
RERUN = "re-run `mtkit preprocess`"


def id_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else int32."""
    return ID_DTYPES[2] if vocab_size <= 1 << 16 else ID_DTYPES[4]


def length_dtype(max_length: int) -> np.dtype:
    return LENGTH_DTYPES[2] if max_length < 1 << 16 else LENGTH_DTYPES[4]


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN


def _layout(count: int, length_bytes: int) -> tuple[int, int]:
    """Byte offsets of the index and ids sections."""
    index_at = _aligned(HEADER_BYTES + count * length_bytes)
    return index_at, _aligned(index_at + (count // INDEX_STRIDE + 1) * 8)


def _index_entries(lengths: np.ndarray, tokens_before: int, position: int) -> np.ndarray:
    """The token offsets of the sentences of a piece that sit at multiples of the stride;
    ``position`` is the piece's first sentence, ``tokens_before`` the tokens before it."""
    starts = tokens_before + np.cumsum(lengths, dtype=np.uint64) - lengths.astype(np.uint64)
    return starts[-position % INDEX_STRIDE :: INDEX_STRIDE]


def _finish_index(entries: list[np.ndarray], count: int, tokens: int) -> np.ndarray:
    """The index: the entries, and the end of the data when ``count`` is a multiple of S."""
    end = [np.array([tokens], dtype=np.uint64)] if count % INDEX_STRIDE == 0 else []
    return np.concatenate([*entries, *end]).astype("<u8")


class EncodedWriter:
    """Writes one ``.ids`` file from lengths and then ids given in pieces, in sentence order.

    ``count`` and the dtypes must be known up front, so every section's place is fixed; the
    index and the checksum are computed on the way.
    """

    def __init__(self, path: str | Path, count: int, ids: np.dtype, lengths: np.dtype) -> None:
        self.path, self.count = Path(path), count
        self.ids_dtype, self.lengths_dtype = np.dtype(ids), np.dtype(lengths)
        self.index_at, self.ids_at = _layout(count, self.lengths_dtype.itemsize)
        self.handle = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.handle.write(bytes(HEADER_BYTES))
        self.crc = 0
        self.lengths_written = self.ids_written = 0
        self.tokens = 0
        self.index: list[np.ndarray] = []  # offsets of sentences 0, S, 2S, ...

    def _write(self, data: bytes | memoryview) -> None:
        self.crc = zlib.crc32(data, self.crc)
        self.handle.write(data)

    def _pad_to(self, offset: int) -> None:
        self._write(bytes(offset - self.handle.tell()))

    def add_lengths(self, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths)
        if self.lengths_written + len(lengths) > self.count:
            raise ValueError("more lengths than sentences")
        if len(lengths) and (lengths.min() < 0 or lengths.max() > np.iinfo(self.lengths_dtype).max):
            raise ValueError(f"a length does not fit {self.lengths_dtype}")
        self.index.append(_index_entries(lengths, self.tokens, self.lengths_written))
        self._write(lengths.astype(self.lengths_dtype).tobytes())
        self.lengths_written += len(lengths)
        self.tokens += int(lengths.sum(dtype=np.int64))

    def add_ids(self, ids: np.ndarray) -> None:
        if self.lengths_written != self.count:
            raise ValueError("write every length before the ids")
        if self.handle.tell() <= self.index_at:  # the first ids: the index goes before them
            self._pad_to(self.index_at)
            self._write(_finish_index(self.index, self.count, self.tokens).tobytes())
            self._pad_to(self.ids_at)
        ids = np.asarray(ids)
        if len(ids) and (ids.min() < 0 or ids.max() > np.iinfo(self.ids_dtype).max):
            raise ValueError(f"an id does not fit {self.ids_dtype}")
        self._write(ids.astype(self.ids_dtype).tobytes())
        self.ids_written += len(ids)

    def close(self) -> None:
        if self.handle.tell() <= self.index_at:
            self.add_ids(np.zeros(0, self.ids_dtype))
        if self.ids_written != self.tokens:
            raise ValueError(f"{self.ids_written} ids written for {self.tokens} tokens")
        header = HEADER.pack(
            MAGIC, FORMAT_VERSION, self.ids_dtype.itemsize, self.lengths_dtype.itemsize, INDEX_STRIDE,
            self.count, self.tokens, self.crc,
        )
        self.handle.seek(0)
        self.handle.write(header.ljust(HEADER_BYTES, b"\0"))
        self.handle.close()

    def __enter__(self) -> EncodedWriter:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is None:
            self.close()
        else:
            self.handle.close()
            self.path.unlink(missing_ok=True)


def write_encoded(path: str | Path, sequences: Sequence[Sequence[int]], vocab_size: int) -> None:
    """One ``.ids`` file from id lists held in memory (dev and test sets, tests)."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    ids = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
    with EncodedWriter(path, len(sequences), id_dtype(vocab_size), length_dtype(int(lengths.max(initial=0)))) as out:
        out.add_lengths(lengths)
        out.add_ids(ids)


class EncodedSide:
    """One side of an encoded split: ``lengths``, the sparse ``index`` and the ``ids``, memory-
    mapped from an ``.ids`` file (``open``) or held in memory (``from_lists``)."""

    def __init__(self, lengths: np.ndarray, index: np.ndarray, ids: np.ndarray, path: Path | None = None) -> None:
        self.lengths, self.index, self.ids, self.path = lengths, index, ids, path

    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> EncodedSide:
        """Map a file after checking its header, size and (``verify``) checksum."""
        path = Path(path)
        try:
            data = np.memmap(path, dtype=np.uint8, mode="r")
        except FileNotFoundError:
            raise DataError(f"encoded split not found; {RERUN}", path) from None
        except ValueError:  # an empty file cannot be mapped
            data = np.zeros(0, np.uint8)
        if len(data) < HEADER_BYTES or bytes(data[:8]) != MAGIC:
            raise DataError(f"not an mtkit .ids file (truncated or corrupted?); {RERUN}", path)
        _, version, id_bytes, length_bytes, stride, count, tokens, crc = HEADER.unpack_from(bytes(data[:HEADER_BYTES]))
        if version != FORMAT_VERSION or id_bytes not in ID_DTYPES or length_bytes not in LENGTH_DTYPES or stride != INDEX_STRIDE:
            raise DataError(f"unsupported .ids format (version {version}); {RERUN} with this mtkit", path)
        index_at, ids_at = _layout(count, length_bytes)
        if len(data) != ids_at + tokens * id_bytes:
            raise DataError(f"encoded split has {len(data):,} bytes, expected {ids_at + tokens * id_bytes:,} (truncated?); {RERUN}", path)
        if verify and _crc32(path) != crc:
            raise DataError(f"encoded split fails its checksum (corrupted); {RERUN}", path)
        lengths = data[HEADER_BYTES : HEADER_BYTES + count * length_bytes].view(LENGTH_DTYPES[length_bytes])
        index = data[index_at : index_at + (count // stride + 1) * 8].view("<u8")
        return cls(lengths, index, data[ids_at:].view(ID_DTYPES[id_bytes]), path)

    @classmethod
    def from_lists(cls, sequences: Sequence[Sequence[int]]) -> EncodedSide:
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        ids = np.fromiter((i for s in sequences for i in s), dtype=np.int64, count=int(lengths.sum()))
        return cls(lengths, _finish_index([_index_entries(lengths, 0, 0)], len(lengths), len(ids)), ids)

    def __len__(self) -> int:
        return len(self.lengths)

    def starts(self, indices: np.ndarray) -> np.ndarray:
        """Token offsets of sentences ``indices``: the index entry before each, plus the lengths
        of the (at most S - 1) sentences between."""
        blocks = indices // INDEX_STRIDE
        first = blocks * INDEX_STRIDE
        window = first[:, None] + np.arange(INDEX_STRIDE - 1)
        inside = window < indices[:, None]
        between = self.lengths[np.where(inside, window, 0)].astype(np.int64)
        return self.index[blocks].astype(np.int64) + (between * inside).sum(axis=1)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.starts(np.array([i]))[0])
        return np.asarray(self.ids[start : start + int(self.lengths[i])], dtype=np.int64)

    def padded(self, indices: np.ndarray, append: int, pad: int, truncate: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A (B, width) int64 array of the sentences ``indices``, each followed by ``append`` and
        padded with ``pad``, cut to ``truncate`` tokens (a cut sentence loses ``append``: the
        book's num_steps); and each row's length."""
        lengths = self.lengths[indices].astype(np.int64)
        sizes = lengths + 1 if truncate is None else np.minimum(lengths + 1, truncate)
        body = np.minimum(lengths, sizes)
        width = int(sizes.max(initial=0))
        out = np.full((len(indices), width), pad, dtype=np.int64)
        columns = np.arange(width)
        inside = columns < body[:, None]
        out[inside] = self.ids[(self.starts(indices)[:, None] + columns)[inside]]
        rows = np.flatnonzero(body < sizes)
        out[rows, body[rows]] = append
        return out, sizes


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as handle:
        handle.seek(HEADER_BYTES)
        for block in iter(lambda: handle.read(1 << 23), b""):
            crc = zlib.crc32(block, crc)
    return crc


class EncodedSplit:
    """Source and target sides of a split; ``groups`` maps each dev/test pair to its source."""

    def __init__(self, src: EncodedSide, tgt: EncodedSide, groups: np.ndarray | None = None) -> None:
        if len(src) != len(tgt):
            raise DataError(f"{src.path or 'source'} has {len(src):,} sentences, {tgt.path or 'target'} {len(tgt):,}; {RERUN}")
        self.src, self.tgt = src, tgt
        self.groups = np.arange(len(src)) if groups is None else groups

    @classmethod
    def open(cls, directory: str | Path, split: str, groups: np.ndarray | None = None, verify: bool = True) -> EncodedSplit:
        directory = Path(directory)
        sides = (EncodedSide.open(directory / f"{split}.{side}.ids", verify) for side in ("src", "tgt"))
        return cls(*sides, groups)

    @classmethod
    def from_lists(cls, src: list[list[int]], tgt: list[list[int]], groups: list[int] | None = None) -> EncodedSplit:
        """A split held in memory (tests, small sets)."""
        return cls(EncodedSide.from_lists(src), EncodedSide.from_lists(tgt), None if groups is None else np.asarray(groups))

    def __len__(self) -> int:
        return len(self.src)

    @property
    def src_lengths(self) -> np.ndarray:
        return self.src.lengths

    @property
    def tgt_lengths(self) -> np.ndarray:
        return self.tgt.lengths

    def target_tokens(self, indices: Iterable[int] | np.ndarray, truncate: int | None = None) -> int:
        """Target tokens the loss counts for these sentences (<eos> included, cut to ``truncate``)."""
        sizes = self.tgt.lengths[np.asarray(indices, dtype=np.int64)].astype(np.int64) + 1
        return int((sizes if truncate is None else np.minimum(sizes, truncate)).sum())

    def first_of_each_group(self) -> list[list[int]]:
        """Source ids of each group's first pair: every dev/test source once."""
        first = np.flatnonzero(np.diff(self.groups, prepend=-1) != 0)
        return [self.src[int(i)].tolist() for i in first]


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
        if (self.path / "train.ids.pt").exists():
            raise DataError(f"made by an older mtkit (encoded splits in .ids.pt files); {RERUN} to rebuild it", self.path)
        self.manifest = read_json(self.path / "manifest.json")
        self.src_lang: str = self.manifest["src_lang"]
        self.tgt_lang: str = self.manifest["tgt_lang"]

    def processor(self, side: str) -> TextProcessor:
        info = self.manifest["tokenizers"][side]
        lang = self.src_lang if side == "src" else self.tgt_lang
        tokenizer = load_tokenizer(info["kind"], self.path / info["file"])
        return TextProcessor(lang, self.manifest["options"]["normalize"], tokenizer)

    def encoded(self, split: str) -> EncodedSplit:
        """A split memory-mapped; dev and test pairs are grouped by source (see ``eval_set``)."""
        groups = None
        if split != "train":
            counts = [len(refs) for refs in self.eval_set(split).references]
            groups = np.repeat(np.arange(len(counts)), counts)
        encoded = EncodedSplit.open(self.path, split, groups)
        if len(encoded.groups) != len(encoded):
            raise DataError(f"{split}: {len(encoded):,} encoded pairs but {len(encoded.groups):,} references; {RERUN}", self.path)
        return encoded

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
