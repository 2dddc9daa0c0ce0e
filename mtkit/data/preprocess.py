"""``mtkit preprocess``: raw parallel text → a data directory ready for training, in bounded memory.

Corpora are read as streams and cut into chunks of lines that worker processes take through three
passes (``chunks``): clean, collect, encode. Between the passes this process decides the split
from the pairs' group hashes, chooses the tokenisers' sample and trains them. Memory holds the
chunks in flight, the held-out sets and the tokenisers' material, never the corpus; the chunks'
scratch files live inside the new data directory, which replaces the old one only when complete.
"""

from __future__ import annotations

import dataclasses
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mtkit import __version__
from mtkit.config import DataConfig
from mtkit.data import chunks as passes
from mtkit.data.chunks import Chunk
from mtkit.data.normalize import apply_scheme
from mtkit.data.dataset import FORMAT_VERSION, EncodedWriter, id_dtype, length_dtype, write_encoded, write_eval_set
from mtkit.data.sources import ReadLimits, open_source
from mtkit.data.split import DEV, TEST, TRAIN, EvalSet, SampleChooser, SplitPlan, group_hashes, group_key, smallest_distinct
from mtkit.data.tokenizers import SentencePieceTokenizer, TokenizerPair, WordTokenizer
from mtkit.data.workers import Workers, available_cores
from mtkit.errors import DataError, Interrupted, UsageError
from mtkit.fileio import staged_dir, write_json

LENGTH_BINS = (5, 10, 15, 20, 30, 50)


@dataclass
class RunOptions:
    """How preprocess runs; unlike ``DataConfig`` none of these changes what it writes."""

    workers: int = field(default_factory=available_cores)
    limits: ReadLimits = field(default_factory=ReadLimits)
    allow_skipped: bool = False  # keep a source even when most of its lines are skipped
    chunk_lines: int = 1 << 16
    progress: bool = True


@dataclass
class SourceReport:
    """What was read from one file (or archive member, or pair of files)."""

    name: str
    split: str  # the split it feeds: train (corpora), dev or test (ready-made files)
    lines: int = 0
    pairs: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    origin: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass
class PreprocessReport:
    out: Path
    splits: dict[str, dict[str, int]]
    vocab_sizes: dict[str, int]
    dropped: Counter[str]
    filtered_long: int
    leaked: dict[str, int]
    length_histogram: dict[str, int] = field(default_factory=dict)
    sources: list[SourceReport] = field(default_factory=list)


def preprocess(
    config: DataConfig,
    out: str | Path,
    corpora: Sequence[str | Path | None] = (None,),
    dev: str | Path | None = None,
    test: str | Path | None = None,
    force: bool = False,
    options: RunOptions | None = None,
    tokenizers: TokenizerPair | None = None,
) -> PreprocessReport:
    """Read, split, normalise, tokenise and encode ``corpora`` (None: the book's download) into
    ``out``. Dev and test are split off the corpora unless ready-made ``dev`` (and ``test``)
    files are given. ``tokenizers`` (a trained run's) encode instead of new ones."""
    options = options or RunOptions()
    if test is not None and dev is None:
        raise UsageError("--test needs --dev (give neither to split dev and test off the corpora)")
    if not corpora:
        raise UsageError("give a corpus: SOURCE or --train FILE (several --train add up)")
    out = Path(out)
    with _sigterm_stops(), staged_dir(out, force, "data directory") as stage, Workers(options.workers) as workers:
        build = _Build(config, options, workers, stage, tokenizers)
        report = build.run(list(corpora), dev, test)
    report.out = out
    return report


@contextmanager
def _sigterm_stops() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the unfinished directory is removed and the old one kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise Interrupted("preprocess stopped by SIGTERM; the data directory was left as it was", 143)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Build:
    """One preprocess run: the passes over the chunks and what is decided between them."""

    def __init__(
        self, config: DataConfig, options: RunOptions, workers: Workers, stage: Path, inherited: TokenizerPair | None
    ) -> None:
        self.config, self.options, self.workers, self.stage = config, options, workers, stage
        self.inherited = inherited  # tokenisers given: none to learn
        self.work = stage / ".work"
        self.work.mkdir()
        self.chunks: list[Chunk] = []
        self.sources: list[SourceReport] = []
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(), console=Console(stderr=True), transient=True, disable=not options.progress,
        )

    def step(self, description: str, unit: str = "chunks"):
        """A line of progress on a terminal; returns the function that counts ``unit``."""
        task = self.progress.add_task(description, total=None, count="")
        done = [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            self.progress.update(task, count=f"{done[0]:,} {unit}")

        return advance

    def run(self, corpora: list, dev: str | Path | None, test: str | Path | None) -> PreprocessReport:
        with self.progress:
            return self._run(corpora, dev, test)

    def _run(self, corpora: list, dev: str | Path | None, test: str | Path | None) -> PreprocessReport:
        config = self.config
        smallest = self.read(corpora)
        given = {name: self.read_eval_file(path, name) for name, path in (("dev", dev), ("test", test)) if path is not None}
        plan = self.plan(smallest, given)
        eval_sets, leaked_keys, material = self.collect(plan, given)
        held_out = 0 if given else len(eval_sets["dev"].pairs) + len(eval_sets["test"].pairs)
        if plan.used == held_out:
            raise UsageError("the training split is empty: lower --dev-size/--test-size or add data")
        tokenizers = (self.inherited.src, self.inherited.tgt) if self.inherited else self.train_tokenizers(material)
        encoded = self.encode(plan, tokenizers)
        if not encoded["pairs"]:
            raise UsageError(f"--max-len {config.max_len} removes every training pair")
        self.assemble(encoded, tokenizers)
        for name in ("dev", "test"):
            self.write_eval(name, eval_sets[name], tokenizers)
        shutil.rmtree(self.work)
        leaked = {name: sum(group_key(s) in leaked_keys for s in eval_sets[name].sources) for name in ("dev", "test")}
        report = PreprocessReport(
            out=self.stage,
            splits={
                "train": {"pairs": encoded["pairs"]},
                **{name: {"pairs": len(s.pairs), "sources": len(s.sources)} for name, s in eval_sets.items()},
            },
            vocab_sizes={side: len(tok.vocab) for side, tok in zip(("src", "tgt"), tokenizers)},
            dropped=sum((s.dropped for s in self.sources), Counter()),
            filtered_long=encoded["too_long"],
            leaked=leaked,
            length_histogram=_histogram(encoded["target_lengths"]),
            sources=self.sources,
        )
        self.write_manifest(report, tokenizers, material)
        return report

    # -- pass 1: read and clean ---------------------------------------------------------------

    def read(self, corpora: list) -> np.ndarray:
        """Clean every corpus into chunks; return the smallest group hashes (grouped split)."""
        config = self.config
        keep = config.dev_size + config.test_size if config.split == "grouped" else 0
        smallest: list[np.ndarray] = []
        total, limit = 0, config.max_examples
        for spec in corpora:
            if limit is not None and total >= limit:
                self.sources.append(SourceReport(str(spec), "train", note="not read: --max-examples reached"))
                continue
            with open_source(spec, config.src_lang, config.tgt_lang, self.options.limits, self.options.progress) as source:
                report = SourceReport(source.name, "train")
                first = len(self.chunks)
                tasks = (
                    (Chunk(first + i, str(self.work), len(self.sources)), block, config.reverse, config.normalize, config.seed, keep)
                    for i, block in enumerate(source.blocks(min(self.options.chunk_lines, limit or self.options.chunk_lines)))
                )
                complete = True
                results = self.workers.map(passes.clean_chunk, tasks)
                advance = self.step(f"reading {source.name}", "pairs")
                for result in results:
                    advance(result.chunk.pairs)
                    chunk = result.chunk
                    chunk.base = total
                    report.lines += result.lines
                    report.dropped.update(result.dropped)
                    self.chunks.append(chunk)
                    if limit is not None and total + chunk.pairs >= limit:
                        chunk.used = limit - total
                        smallest.append(smallest_distinct(chunk.keys(), keep))
                        total = limit
                        complete = False
                        break
                    smallest.append(result.smallest)
                    total += chunk.pairs
                results.close()  # stopped early: drop the chunks not yet cleaned
                report.pairs = sum(c.used for c in self.chunks[first:])
                source.finish(complete)
                report.origin = source.origin
            self.sources.append(report)
            _check_skipped(report, self.options.allow_skipped, stopped_early=not complete)
        return smallest_distinct(smallest, keep) if smallest else np.zeros(0, np.uint64)

    def read_eval_file(self, spec: str | Path, name: str) -> EvalSet:
        """A ready-made dev or test set, held in memory like any held-out set."""
        config = self.config
        pairs: list[tuple[str, str]] = []
        with open_source(spec, config.src_lang, config.tgt_lang, self.options.limits, self.options.progress) as source:
            report = SourceReport(source.name, name)
            for block in source.blocks(self.options.chunk_lines):
                sources, targets = passes.parse_block(block, report.dropped)
                report.lines += len(block[0]) if isinstance(block, tuple) else len(block)
                pairs += zip(targets, sources) if config.reverse else zip(sources, targets)
            source.finish(True)
            report.pairs, report.origin = len(pairs), source.origin
        self.sources.append(report)
        _check_skipped(report, self.options.allow_skipped)
        return EvalSet.from_pairs(pairs)

    # -- between passes: the split and the tokenisers' sample ---------------------------------

    def plan(self, smallest: np.ndarray, given: dict[str, EvalSet]) -> SplitPlan:
        config = self.config
        used = sum(c.used for c in self.chunks)
        if given:
            held = [s for evalset in given.values() for s in evalset.sources]
            return SplitPlan("given", used, leak_hashes=np.unique(group_hashes(held, config.seed)))
        if config.split == "grouped":
            return SplitPlan.grouped(used, smallest, config.dev_size, config.test_size)
        plan = SplitPlan.ordered(used, config.dev_size, config.test_size)
        held = [c.keys()[max(0, plan.train_end - c.base):] for c in self.chunks if c.base + c.used > plan.train_end]
        plan.leak_hashes = np.unique(np.concatenate(held)) if held else plan.leak_hashes
        return plan

    def vocab_roles(self) -> tuple[int, ...]:
        """The pairs the vocabulary is built on: train, and dev with ``vocab_with_dev`` (the book)."""
        return (TRAIN, DEV) if self.config.vocab_with_dev else (TRAIN,)

    def sample(self, plan: SplitPlan, extra: int) -> list[np.ndarray]:
        """Per chunk, the positions of the SentencePiece sample (``extra`` places are taken)."""
        chooser = SampleChooser(max(0, self.config.spm_sample - extra), self.config.seed)
        for chunk in self.chunks:
            roles = plan.roles(chunk.keys(), chunk.base)
            chooser.add(chunk.base + np.flatnonzero(np.isin(roles, self.vocab_roles())))
        chosen = chooser.chosen()
        return [chosen[(chosen >= c.base) & (chosen < c.base + c.used)] - c.base for c in self.chunks]

    # -- pass 2: held-out sets, leaks, the tokenisers' material --------------------------------

    def collect(self, plan: SplitPlan, given: dict[str, EvalSet]) -> tuple[dict[str, EvalSet], set[str], dict]:
        config = self.config
        words = config.tokenizer == "word" and not self.inherited
        extra = given["dev"].pairs if config.vocab_with_dev and "dev" in given and not self.inherited else []
        samples = [None] * len(self.chunks) if words or self.inherited else self.sample(plan, len(extra))
        held: dict[int, list[tuple[str, str]]] = {DEV: [], TEST: []}
        leaked: set[str] = set()
        counts = (Counter(), Counter())
        tasks = ((c, plan, config.normalize, self.vocab_roles(), words, s) for c, s in zip(self.chunks, samples))
        advance = self.step("splitting")
        for collected in self.workers.map(passes.collect_chunk, tasks):
            advance()
            for _, role, src, tgt in collected.held_out:
                held[role].append((src, tgt))
            leaked |= collected.leaked_keys
            if collected.counts is not None:
                for total, chunk_counts in zip(counts, collected.counts):
                    total.update(chunk_counts)
        eval_sets = {"dev": EvalSet.from_pairs(held[DEV]), "test": EvalSet.from_pairs(held[TEST])} if not given else {
            "dev": given["dev"], "test": given.get("test", EvalSet([], []))
        }
        material: dict = {"sentences": sum(len(s) for s in samples if s is not None) + len(extra)}
        if self.inherited:
            return eval_sets, leaked, material
        if words:
            for side, total in zip((0, 1), counts):
                total.update(t for pair in extra for t in WordTokenizer.split(apply_scheme(pair[side], config.normalize)))
            material["counts"] = counts
        else:
            material["files"] = [self._sample_file(side, [apply_scheme(p[i], config.normalize) for p in extra])
                                 for i, side in enumerate(("src", "tgt"))]
        return eval_sets, leaked, material

    def _sample_file(self, side: str, extra: list[str]) -> Path:
        """The chunks' sample files for one side, concatenated in chunk order (+ ``extra``)."""
        path = self.work / f"sample.{side}"
        with open(path, "wb") as out:
            for chunk in self.chunks:
                part = chunk.path(f"sample.{side}")
                if part.exists():
                    with open(part, "rb") as handle:
                        shutil.copyfileobj(handle, out)
                    part.unlink()
            out.write("".join(line + "\n" for line in extra).encode("utf-8"))
        return path

    # -- the tokenisers -------------------------------------------------------------------------

    def train_tokenizers(self, material: dict) -> tuple:
        config = self.config
        self.step(f"training the {config.tokenizer} vocabularies")
        if config.tokenizer == "word":
            src_counts, tgt_counts = material["counts"]
            if config.joint_vocab:
                joint = WordTokenizer.from_counts(src_counts + tgt_counts, config.min_freq)
                return joint, joint
            return WordTokenizer.from_counts(src_counts, config.min_freq), WordTokenizer.from_counts(tgt_counts, config.min_freq)
        src_file, tgt_file = material["files"]
        # The trainer's memory grows with the text (~21 bytes a character): past --spm-sample-mb
        # per side, the same evenly spaced sentences are taken on both sides.
        sample, largest = material["sentences"], max(src_file.stat().st_size, tgt_file.stat().st_size)
        material["sentences"] = min(sample, max(1, sample * config.spm_sample_mb * 2**20 // max(1, largest)))
        sides = 2 if config.joint_vocab else 1
        keep = (material["sentences"] * sides, sample * sides)
        if config.joint_vocab:
            with open(src_file, "ab") as out, open(tgt_file, "rb") as handle:
                shutil.copyfileobj(handle, out)
            joint = SentencePieceTokenizer.train_file(src_file, config.vocab_size, config.sp_model, keep)
            return joint, joint
        return tuple(SentencePieceTokenizer.train_file(f, config.vocab_size, config.sp_model, keep) for f in (src_file, tgt_file))

    def save_tokenizers(self, tokenizers: tuple) -> dict[str, dict]:
        info = {}
        for side, lang, tok in zip(("src", "tgt"), (self.config.src_lang, self.config.tgt_lang), tokenizers):
            name = "joint" if self.config.joint_vocab else lang
            vocab_file = f"vocab.{name}.txt"
            tok.vocab.save(self.stage / vocab_file)
            file = vocab_file
            if isinstance(tok, SentencePieceTokenizer):
                file = f"spm.{name}.model"
                tok.save(self.stage / file)
            info[side] = {"kind": tok.kind, "file": file, "vocab": vocab_file, "size": len(tok.vocab)}
        return info

    # -- pass 3: encode -------------------------------------------------------------------------

    def encode(self, plan: SplitPlan, tokenizers: tuple) -> dict:
        self.tokenizer_info = self.save_tokenizers(tokenizers)
        specs = tuple(
            (info["kind"], str(self.stage / info["file"]), id_dtype(len(tok.vocab)).str)
            for info, tok in zip(self.tokenizer_info.values(), tokenizers)
        )
        totals = {"pairs": 0, "too_long": 0, "max_lengths": [0, 0], "target_lengths": 0, "kept": []}
        tasks = ((c, plan, self.config.normalize, specs, self.config.max_len) for c in self.chunks)
        advance = self.step("encoding")
        for chunk, result in zip(self.chunks, self.workers.map(passes.encode_chunk, tasks)):
            advance()
            for name in ("src", "tgt", "src.norm", "tgt.norm", "key"):
                chunk.path(name).unlink(missing_ok=True)
            totals["pairs"] += result.kept
            totals["too_long"] += result.too_long
            totals["max_lengths"] = [max(a, b) for a, b in zip(totals["max_lengths"], result.max_lengths)]
            totals["target_lengths"] = totals["target_lengths"] + result.target_lengths
            totals["kept"].append(result.kept)
        totals["dtypes"] = [np.dtype(spec[2]) for spec in specs]
        return totals

    def assemble(self, encoded: dict, tokenizers: tuple) -> None:
        """Concatenate the chunks' outputs, in chunk order, into the split's final files."""
        config = self.config
        self.step("writing the data directory")
        for i, side in enumerate(("src", "tgt")):
            dtype = encoded["dtypes"][i]
            with EncodedWriter(self.stage / f"train.{side}.ids", encoded["pairs"], dtype, length_dtype(encoded["max_lengths"][i])) as out:
                for chunk in self.chunks:
                    out.add_lengths(np.fromfile(chunk.path(f"{side}.len"), dtype="<u4"))
                for chunk in self.chunks:
                    out.add_ids(np.fromfile(chunk.path(f"{side}.ids"), dtype=dtype))
            lang = config.src_lang if side == "src" else config.tgt_lang
            with open(self.stage / f"train.{lang}", "wb") as text:
                for chunk in self.chunks:
                    with open(chunk.path(f"train.{side}"), "rb") as handle:
                        shutil.copyfileobj(handle, text)
                    for name in (f"{side}.len", f"{side}.ids", f"train.{side}"):
                        chunk.path(name).unlink()

    def write_eval(self, name: str, data: EvalSet, tokenizers: tuple) -> None:
        config = self.config
        write_eval_set(self.stage, name, config.src_lang, config.tgt_lang, data)
        pairs = data.pairs
        for i, (side, tok) in enumerate(zip(("src", "tgt"), tokenizers)):
            texts = [apply_scheme(pair[i], config.normalize) for pair in pairs]
            write_encoded(self.stage / f"{name}.{side}.ids", tok.encode_batch(texts), len(tok.vocab))

    def write_manifest(self, report: PreprocessReport, tokenizers: tuple, material: dict) -> None:
        config = self.config
        sources: dict[str, list[dict]] = {}
        for source in self.sources:
            entry = {**source.origin, "lines": source.lines, "pairs": source.pairs, "dropped_lines": dict(source.dropped)}
            if source.note:
                entry = {"path": source.name, "note": source.note}
            sources.setdefault(source.split, []).append(entry)
        write_json(
            self.stage / "manifest.json",
            {
                "mtkit_version": __version__,
                "ids_format": FORMAT_VERSION,
                "src_lang": config.src_lang,
                "tgt_lang": config.tgt_lang,
                "sources": sources,
                "options": dataclasses.asdict(config),
                "tokenizers": self.tokenizer_info,
                "tokenizer_sentences": material["sentences"] if config.tokenizer == "sentencepiece" and not self.inherited else None,
                "tokenizers_from": self.inherited.origin if self.inherited else None,
                "splits": report.splits,
                "dropped_lines": dict(report.dropped),
                "filtered_by_max_len": report.filtered_long,
                "dev_test_sources_in_train": report.leaked,
            },
        )


def _check_skipped(report: SourceReport, allow: bool, stopped_early: bool = False) -> None:
    """A source with no usable pair is refused; so is one whose lines are mostly skipped (a
    binary, a wrong format or encoding), unless the user allows it."""
    if not report.pairs and not stopped_early:
        raise DataError(f"no usable sentence pairs ({_describe(report.dropped)})", report.name)
    blank = report.dropped["blank line"]
    skipped = sum(report.dropped.values()) - blank
    if not allow and skipped * 2 > report.lines - blank:
        raise DataError(
            f"{skipped:,} of its {report.lines - blank:,} lines were skipped ({_describe(report.dropped)}): "
            "not a corpus of pairs in a format mtkit reads? (--allow-skipped keeps the rest)",
            report.name,
        )


def _describe(dropped: Counter[str]) -> str:
    if not dropped:
        return "the input is empty"
    return "skipped: " + ", ".join(f"{n:,} {reason}" for reason, n in dropped.most_common())


def _histogram(counts: np.ndarray | int) -> dict[str, int]:
    """Target lengths in the bins of the summary, from a count per length."""
    counts = np.asarray(counts, dtype=np.int64)
    bins: dict[str, int] = {}
    low = 1
    for high in LENGTH_BINS:
        bins[f"{low}-{high}"] = int(counts[low : high + 1].sum())
        low = high + 1
    bins[f">{LENGTH_BINS[-1]}"] = int(counts[LENGTH_BINS[-1] + 1 :].sum())
    return bins


def print_report(report: PreprocessReport, console: Console) -> None:
    table = Table(title=f"data directory {report.out}", title_justify="left")
    table.add_column("split")
    table.add_column("pairs", justify="right")
    table.add_column("source sentences", justify="right")
    table.add_column("sources also in train", justify="right")
    for name, counts in report.splits.items():
        leak = str(report.leaked[name]) if name in report.leaked else ""
        sources = f"{counts['sources']:,}" if "sources" in counts else ""
        table.add_row(name, f"{counts['pairs']:,}", sources, leak)
    console.print(table)
    if len(report.sources) > 1 or any(s.note for s in report.sources):
        inputs = Table(title="sources", title_justify="left")
        inputs.add_column("file", overflow="fold")
        for column in ("split", "lines", "pairs", "skipped"):
            inputs.add_column(column, justify="left" if column == "split" else "right")
        for source in report.sources:
            skipped = ", ".join(f"{n:,} {reason}" for reason, n in source.dropped.most_common()) or source.note or "none"
            inputs.add_row(source.name, source.split, f"{source.lines:,}", f"{source.pairs:,}", skipped)
        console.print(inputs)
    console.print(f"vocabulary: source {report.vocab_sizes['src']:,}, target {report.vocab_sizes['tgt']:,}")
    total = max(1, sum(report.length_histogram.values()))
    console.print("train target length (tokens):")
    for label, count in report.length_histogram.items():
        bar = "█" * round(40 * count / total)
        console.print(f"  {label:>6} {count:>8,} {bar}")
    skipped = ", ".join(f"{n:,} {reason}" for reason, n in report.dropped.most_common()) or "none"
    console.print(f"skipped lines: {skipped}")
    if report.filtered_long:
        console.print(f"removed by --max-len: {report.filtered_long:,} training pairs")
