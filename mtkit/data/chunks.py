"""The three passes of ``preprocess`` over a corpus cut into chunks, each a function of one chunk
that a worker process runs (see ``workers``):

1. ``clean_chunk``: raw lines → cleaned pairs (bad lines counted by reason), the normalised text
   when the scheme changes it, and each pair's group hash; written to the chunk's files.
2. ``collect_chunk``: the held-out pairs (returned), training sources that leak, and what the
   tokenisers learn from: word counts, or the sentences of the SentencePiece sample.
3. ``encode_chunk``: training pairs → token ids and lengths, and their text, in final form.

The chunk files live in a scratch directory inside the data directory being built; the outputs
of pass 3 are concatenated in chunk order, so the result never depends on how many workers ran.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtkit.data.normalize import apply_scheme, clean
from mtkit.data.split import DEV, TEST, TRAIN, SplitPlan, group_hashes, group_key, smallest_distinct
from mtkit.data.tokenizers import load_tokenizer

# Characters str.strip() would remove that bytes.strip() would not are not blank (as before).
_ASCII_SPACE = " \t\n\r\x0b\x0c"


@dataclass
class Chunk:
    """A chunk's place in the corpus and its files (``index`` names them)."""

    index: int
    directory: str
    source: int = 0  # which corpus it came from
    base: int = 0  # position of its first pair in the corpus
    pairs: int = 0  # pairs it holds (all used unless --max-examples stops inside it)
    used: int = 0

    def path(self, name: str) -> Path:
        return Path(self.directory) / f"{self.index:06d}.{name}"

    def lines(self, name: str) -> list[str]:
        text = self.path(name).read_text(encoding="utf-8")
        return text.split("\n")[: self.used]

    def keys(self) -> np.ndarray:
        return np.fromfile(self.path("key"), dtype="<u8")[: self.used].astype(np.uint64)


# -- pass 1 -------------------------------------------------------------------------------------


@dataclass
class CleanResult:
    chunk: Chunk
    lines: int
    dropped: Counter[str]
    smallest: np.ndarray  # the chunk's smallest distinct group hashes


def clean_chunk(chunk: Chunk, block: list[bytes] | tuple[list[bytes], list[bytes]], reverse: bool,
                scheme: str, seed: int, keep: int) -> CleanResult:
    """Clean one block of raw lines (a TSV block, or a block of each parallel file)."""
    dropped: Counter[str] = Counter()
    sources, targets = parse_block(block, dropped)
    lines = len(block[0]) if isinstance(block, tuple) else len(block)
    if reverse:
        sources, targets = targets, sources
    _write_lines(chunk.path("src"), sources)
    _write_lines(chunk.path("tgt"), targets)
    if scheme != "clean":
        _write_lines(chunk.path("src.norm"), [apply_scheme(s, scheme) for s in sources])
        _write_lines(chunk.path("tgt.norm"), [apply_scheme(t, scheme) for t in targets])
    keys = group_hashes(sources, seed)
    keys.astype("<u8").tofile(chunk.path("key"))
    chunk.pairs = chunk.used = len(sources)
    smallest = smallest_distinct(keys, keep) if keep else keys[:0]
    return CleanResult(chunk, lines, dropped, smallest)


def parse_block(block: list[bytes] | tuple[list[bytes], list[bytes]], dropped: Counter[str]) -> tuple[list[str], list[str]]:
    """Cleaned sources and targets of a block of raw lines; bad lines are counted by reason."""
    return _parallel_pairs(*block, dropped) if isinstance(block, tuple) else _tsv_pairs(block, dropped)


def _tsv_pairs(block: list[bytes], dropped: Counter[str]) -> tuple[list[str], list[str]]:
    """Pairs from tab-separated lines of 2 columns, or 3 (manythings' attribution column)."""
    sources, targets = [], []
    try:  # fast path: the whole block is valid UTF-8
        lines: list[str] | list[bytes] = b"\n".join(block).decode("utf-8").split("\n") if block else []
    except UnicodeDecodeError:
        lines = block
    for line in lines:
        if isinstance(line, bytes):
            if not line.strip():
                dropped["blank line"] += 1
                continue
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError:
                dropped["invalid UTF-8"] += 1
                continue
        elif not line.strip(_ASCII_SPACE):
            dropped["blank line"] += 1
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            dropped["no tab"] += 1
        elif len(columns) > 3:
            dropped["more than 3 columns"] += 1
        else:
            _add_pair(columns[0], columns[1], sources, targets, dropped)
    return sources, targets


def _parallel_pairs(src_block: list[bytes], tgt_block: list[bytes], dropped: Counter[str]) -> tuple[list[str], list[str]]:
    sources, targets = [], []
    for src_raw, tgt_raw in zip(src_block, tgt_block):
        try:
            src, tgt = src_raw.decode("utf-8"), tgt_raw.decode("utf-8")
        except UnicodeDecodeError:
            dropped["invalid UTF-8"] += 1
            continue
        _add_pair(src, tgt, sources, targets, dropped)
    return sources, targets


def _add_pair(src: str, tgt: str, sources: list[str], targets: list[str], dropped: Counter[str]) -> None:
    src, tgt = clean(src), clean(tgt)
    if src and tgt:
        sources.append(src)
        targets.append(tgt)
    else:
        dropped["empty side"] += 1


def _write_lines(path: Path, lines: list[str]) -> None:
    """Cleaned text holds no line breaks, so ``\\n`` separates lines unambiguously."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        if lines:
            handle.write("\n".join(lines))
            handle.write("\n")


def normalized(chunk: Chunk, side: str, scheme: str) -> list[str]:
    return chunk.lines(f"{side}.norm" if scheme != "clean" else side)


# -- pass 2 -------------------------------------------------------------------------------------


@dataclass
class Collected:
    held_out: list[tuple[int, int, str, str]] = field(default_factory=list)  # (position, role, src, tgt)
    leaked_keys: set[str] = field(default_factory=set)  # group keys of training sources also held out
    counts: tuple[Counter[str], Counter[str]] | None = None  # word tokenisers: token counts per side
    sampled: int = 0  # SentencePiece: sentences written to the sample files


def collect_chunk(chunk: Chunk, plan: SplitPlan, scheme: str, vocab_roles: tuple[int, ...],
                  word_counts: bool, sample: np.ndarray | None) -> Collected:
    """Held-out pairs, leaks, and the tokenisers' material (pairs whose role is in
    ``vocab_roles``): word counts, or the sentences at ``sample`` (positions in the chunk)
    appended to the chunk's sample files."""
    keys = chunk.keys()
    roles = plan.roles(keys, chunk.base)
    out = Collected()
    held = np.flatnonzero((roles == DEV) | (roles == TEST))
    leaks = np.flatnonzero((roles == TRAIN) & np.isin(keys, plan.leak_hashes))
    if len(held) or len(leaks):
        sources, targets = chunk.lines("src"), chunk.lines("tgt")
        out.held_out = [(chunk.base + int(i), int(roles[i]), sources[i], targets[i]) for i in held]
        out.leaked_keys = {group_key(sources[i]) for i in leaks}
    wanted = np.isin(roles, vocab_roles)
    if word_counts:
        out.counts = tuple(
            _count_words(normalized(chunk, side, scheme), wanted) for side in ("src", "tgt")
        )  # type: ignore[assignment]
    elif sample is not None and len(sample):
        for side in ("src", "tgt"):
            lines = normalized(chunk, side, scheme)
            _write_lines(chunk.path(f"sample.{side}"), [lines[i] for i in sample])
        out.sampled = len(sample)
    return out


def _count_words(lines: list[str], wanted: np.ndarray) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line, keep in zip(lines, wanted.tolist()):
        if keep:
            counts.update(token for token in line.split(" ") if token)
    return counts


# -- pass 3 -------------------------------------------------------------------------------------


@dataclass
class Encoded:
    kept: int
    too_long: int
    max_lengths: tuple[int, int]
    tokens: tuple[int, int]
    target_lengths: np.ndarray  # histogram of target lengths (tokens), index = length (capped)


_TOKENIZERS: dict[str, object] = {}
HISTOGRAM_CAP = 1024


def _tokenizer(kind: str, path: str):
    key = f"{kind}:{path}"
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(kind, path)
    return _TOKENIZERS[key]


def encode_chunk(chunk: Chunk, plan: SplitPlan, scheme: str, tokenizers: tuple[tuple[str, str, str], ...],
                 max_len: int | None) -> Encoded:
    """Encode the chunk's training pairs with ``tokenizers`` (kind, file, id dtype per side);
    write their ids, lengths and text for assembly."""
    train = np.flatnonzero(plan.roles(chunk.keys(), chunk.base) == TRAIN)
    encoded = []
    for side, (kind, path, _) in zip(("src", "tgt"), tokenizers):
        lines = normalized(chunk, side, scheme)
        encoded.append(_tokenizer(kind, path).encode_batch([lines[i] for i in train]))
    lengths = [np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) for ids in encoded]
    keep = np.ones(len(train), dtype=bool)
    if max_len is not None:
        keep = (lengths[0] <= max_len) & (lengths[1] <= max_len)
    kept = np.flatnonzero(keep)
    all_kept = len(kept) == len(train)
    stats = []
    for side, ids, side_lengths, (_, _, dtype) in zip(("src", "tgt"), encoded, lengths, tokenizers):
        if not all_kept:
            ids, side_lengths = [ids[i] for i in kept], side_lengths[kept]
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(side_lengths.sum()))
        flat.astype(dtype).tofile(chunk.path(f"{side}.ids"))
        side_lengths.astype("<u4").tofile(chunk.path(f"{side}.len"))
        stats.append((int(side_lengths.max(initial=0)), int(side_lengths.sum())))
        text = chunk.lines(side)
        _write_lines(chunk.path(f"train.{side}"), [text[train[i]] for i in kept])
    histogram = np.bincount(np.minimum(lengths[1][kept], HISTOGRAM_CAP), minlength=HISTOGRAM_CAP + 1)
    return Encoded(
        kept=len(kept), too_long=len(train) - len(kept),
        max_lengths=(stats[0][0], stats[1][0]), tokens=(stats[0][1], stats[1][1]),
        target_lengths=histogram,
    )
