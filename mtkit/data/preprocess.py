"""``mtkit preprocess``: raw parallel text → a data directory ready for training."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mtkit import __version__
from mtkit.config import DataConfig
from mtkit.data.dataset import EncodedSplit, write_eval_set
from mtkit.data.normalize import normalize
from mtkit.data.sources import Corpus, read_corpus
from mtkit.data.split import EvalSet, leaked_sources, split_pairs
from mtkit.data.tokenizers import SentencePieceTokenizer, WordTokenizer
from mtkit.errors import UsageError
from mtkit.fileio import prepare_output_dir, write_json, write_lines

LENGTH_BINS = (5, 10, 15, 20, 30, 50)


@dataclass
class PreprocessReport:
    out: Path
    splits: dict[str, dict[str, int]]
    vocab_sizes: dict[str, int]
    dropped: Counter[str]
    filtered_long: int
    leaked: dict[str, int]
    length_histogram: dict[str, int] = field(default_factory=dict)


def preprocess(
    config: DataConfig,
    out: str | Path,
    source: str | Path | None = None,
    train: str | Path | None = None,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> PreprocessReport:
    """Read, split, normalise, tokenise and encode; write everything to ``out`` atomically."""
    out = Path(out)
    ready_made = any(p is not None for p in (train, dev, test))
    if ready_made and (source is not None or train is None or dev is None):
        raise UsageError("give either SOURCE, or --train and --dev (and optionally --test) files")
    prepare_output_dir(out, force, "data directory").rmdir()  # checked now, written at the end

    dropped: Counter[str] = Counter()
    origins: dict[str, dict[str, str]] = {}

    def load(path: str | Path | None, name: str) -> list[tuple[str, str]]:
        corpus = _oriented(read_corpus(path, config.src_lang, config.tgt_lang, progress), config)
        dropped.update(corpus.dropped)
        origins[name] = corpus.origin
        return corpus.pairs

    if ready_made:
        train_pairs = load(train, "train")[: config.max_examples]
        dev_set = EvalSet.from_pairs(load(dev, "dev"))
        test_set = EvalSet.from_pairs(load(test, "test")) if test is not None else EvalSet([], [])
    else:
        pairs = load(source, "corpus")[: config.max_examples]
        train_pairs, dev_set, test_set = split_pairs(
            pairs, config.dev_size, config.test_size, config.split, config.seed
        )
    if not train_pairs:
        raise UsageError("the training split is empty: lower --dev-size/--test-size or add data")

    def normalized(pairs: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
        return [normalize(s, config.normalize) for s, _ in pairs], [normalize(t, config.normalize) for _, t in pairs]

    def encode(sources: list[str], targets: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        return [src_tok.encode(s) for s in sources], [tgt_tok.encode(t) for t in targets]

    train_norm = normalized(train_pairs)
    src_tok, tgt_tok = _train_tokenizers(config, *train_norm)
    train_src, train_tgt = encode(*train_norm)
    filtered_long = 0
    if config.max_len is not None:
        keep = [i for i in range(len(train_pairs)) if max(len(train_src[i]), len(train_tgt[i])) <= config.max_len]
        filtered_long = len(train_pairs) - len(keep)
        train_pairs = [train_pairs[i] for i in keep]
        train_src = [train_src[i] for i in keep]
        train_tgt = [train_tgt[i] for i in keep]
        if not train_pairs:
            raise UsageError(f"--max-len {config.max_len} removes every training pair")

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tokenizer_info = _save_tokenizers(tmp, config, src_tok, tgt_tok)
        write_lines(tmp / f"train.{config.src_lang}", [s for s, _ in train_pairs])
        write_lines(tmp / f"train.{config.tgt_lang}", [t for _, t in train_pairs])
        EncodedSplit.from_lists(train_src, train_tgt).save(tmp / "train.ids.pt")
        for name, data in (("dev", dev_set), ("test", test_set)):
            write_eval_set(tmp, name, config.src_lang, config.tgt_lang, data)
            src_ids, tgt_ids = encode(*normalized(data.pairs))
            EncodedSplit.from_lists(src_ids, tgt_ids, data.groups).save(tmp / f"{name}.ids.pt")
        splits = {
            "train": {"pairs": len(train_pairs), "sources": len({s for s, _ in train_pairs})},
            "dev": {"pairs": len(dev_set.pairs), "sources": len(dev_set.sources)},
            "test": {"pairs": len(test_set.pairs), "sources": len(test_set.sources)},
        }
        report = PreprocessReport(
            out=out,
            splits=splits,
            vocab_sizes={"src": len(src_tok.vocab), "tgt": len(tgt_tok.vocab)},
            dropped=dropped,
            filtered_long=filtered_long,
            leaked={
                "dev": leaked_sources(train_pairs, dev_set),
                "test": leaked_sources(train_pairs, test_set),
            },
            length_histogram=_histogram([len(t) for t in train_tgt]),
        )
        write_json(
            tmp / "manifest.json",
            {
                "mtkit_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "src_lang": config.src_lang,
                "tgt_lang": config.tgt_lang,
                "sources": origins,
                "options": dataclasses.asdict(config),
                "tokenizers": tokenizer_info,
                "splits": splits,
                "dropped_lines": dict(dropped),
                "filtered_by_max_len": filtered_long,
                "dev_test_sources_in_train": report.leaked,
            },
        )
        if out.exists():  # --force with a directory created meanwhile
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _oriented(corpus: Corpus, config: DataConfig) -> Corpus:
    if config.reverse:
        corpus.pairs = [(t, s) for s, t in corpus.pairs]
    return corpus


def _train_tokenizers(
    config: DataConfig, src_texts: list[str], tgt_texts: list[str]
) -> tuple[WordTokenizer | SentencePieceTokenizer, WordTokenizer | SentencePieceTokenizer]:
    def train(texts: list[str]) -> WordTokenizer | SentencePieceTokenizer:
        if config.tokenizer == "word":
            return WordTokenizer.train(texts, config.min_freq)
        return SentencePieceTokenizer.train(texts, config.vocab_size, config.sp_model)

    if config.joint_vocab:
        joint = train(src_texts + tgt_texts)
        return joint, joint
    return train(src_texts), train(tgt_texts)


def _save_tokenizers(directory: Path, config: DataConfig, src_tok, tgt_tok) -> dict[str, dict]:
    info = {}
    for side, lang, tok in (("src", config.src_lang, src_tok), ("tgt", config.tgt_lang, tgt_tok)):
        name = "joint" if config.joint_vocab else lang
        vocab_file = f"vocab.{name}.txt"
        tok.vocab.save(directory / vocab_file)
        file = vocab_file
        if isinstance(tok, SentencePieceTokenizer):
            file = f"spm.{name}.model"
            tok.save(directory / file)
        info[side] = {"kind": tok.kind, "file": file, "vocab": vocab_file, "size": len(tok.vocab)}
    return info


def _histogram(lengths: list[int]) -> dict[str, int]:
    bins: dict[str, int] = {}
    low = 1
    for high in LENGTH_BINS:
        bins[f"{low}-{high}"] = sum(low <= n <= high for n in lengths)
        low = high + 1
    bins[f">{LENGTH_BINS[-1]}"] = sum(n > LENGTH_BINS[-1] for n in lengths)
    return bins


def print_report(report: PreprocessReport, console: Console) -> None:
    table = Table(title=f"data directory {report.out}", title_justify="left")
    table.add_column("split")
    table.add_column("pairs", justify="right")
    table.add_column("source sentences", justify="right")
    table.add_column("sources also in train", justify="right")
    for name, counts in report.splits.items():
        leak = str(report.leaked[name]) if name in report.leaked else ""
        table.add_row(name, f"{counts['pairs']:,}", f"{counts['sources']:,}", leak)
    console.print(table)
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
