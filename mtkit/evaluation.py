"""Scores: sacreBLEU's BLEU, chrF and TER (multi-reference) and the book's sentence BLEU."""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF, TER

from mtkit.errors import DataError
from mtkit.fileio import read_lines as read_text


@dataclass
class Scores:
    bleu: float
    chrf: float
    ter: float
    lines: list[str]  # sacrebleu's text form, one line per metric, signature included
    signatures: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {"bleu": self.bleu, "chrf": self.chrf, "ter": self.ter, "signatures": self.signatures}


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-sentence reference lists → sacrebleu's reference streams; a sentence with fewer
    references gets ``None`` in the missing streams, which sacrebleu skips (an empty string
    would count as an empty reference)."""
    width = max((len(refs) for refs in references), default=1)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], lowercase: bool = False
) -> Scores:
    """Corpus BLEU, chrF and TER of detokenised ``hypotheses`` against one or more references
    per sentence (the reference lists may differ in length); ``lowercase`` as sacrebleu -lc,
    which makes BLEU case-insensitive and leaves chrF cased (TER is case-insensitive already)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    streams = reference_streams(references)
    metrics = {"bleu": BLEU(lowercase=lowercase), "chrf": CHRF(), "ter": TER()}
    results = {name: metric.corpus_score(list(hypotheses), streams) for name, metric in metrics.items()}
    signatures = {name: str(metric.get_signature()) for name, metric in metrics.items()}
    return Scores(
        bleu=results["bleu"].score,
        chrf=results["chrf"].score,
        ter=results["ter"].score,
        # The same text and precision as `sacrebleu REF -i HYP -f text -m bleu chrf ter`.
        lines=[results[name].format(width=1, signature=signatures[name]) for name in metrics],
        signatures={name: f"{results[name].name}|{sig}" for name, sig in signatures.items()},
    )


def corpus_bleu_chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, float]:
    """BLEU and chrF only (validation during training: TER is slow)."""
    streams = reference_streams(references)
    return (
        BLEU().corpus_score(list(hypotheses), streams).score,
        CHRF().corpus_score(list(hypotheses), streams).score,
    )


def book_bleu(prediction: str, label: str, k: int = 2) -> float:
    """The chapter's sentence BLEU on space-separated tokens, on a 0–1 scale:
    exp(min(0, 1 − len_label/len_pred)) · ∏_{n=1..k} p_n^(1/2^n), with clipped n-gram
    precisions p_n, no smoothing, and n running only up to the prediction's length."""
    pred_tokens, label_tokens = prediction.split(" "), label.split(" ")
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    score = math.exp(min(0.0, 1 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        num_matches = 0
        label_subs: collections.Counter[str] = collections.Counter()
        for i in range(len_label - n + 1):
            label_subs[" ".join(label_tokens[i : i + n])] += 1
        for i in range(len_pred - n + 1):
            gram = " ".join(pred_tokens[i : i + n])
            if label_subs[gram] > 0:
                num_matches += 1
                label_subs[gram] -= 1
        score *= math.pow(num_matches / (len_pred - n + 1), math.pow(0.5, n))
    return score


def read_lines(path: str | Path) -> list[str]:
    """All lines of a text file (any line ending, BOM tolerated), without line ends."""
    return list(read_text(path))


def read_references(paths: Sequence[str | Path], expected: int) -> list[list[str]]:
    """Reference lists per sentence from one or more files, or from one ``.jsonl`` file whose
    lines are JSON lists. An empty line in the second and later files means "no reference"."""
    if len(paths) == 1 and str(paths[0]).endswith(".jsonl"):
        references = []
        for number, line in enumerate(read_lines(paths[0]), start=1):
            try:
                refs = json.loads(line)
            except json.JSONDecodeError:
                raise DataError("not a JSON list of references", paths[0], number) from None
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise DataError("expected a non-empty JSON list of strings", paths[0], number)
            references.append(refs)
        files = [references]
    else:
        files = [[[line] for line in read_lines(path)] for path in paths]
    for path, lines in zip(paths, files):
        if len(lines) != expected:
            raise DataError(f"has {len(lines):,} lines but the hypotheses have {expected:,}", path)
    merged = files[0]
    for extra in files[1:]:
        merged = [refs + [line[0]] if line[0] else refs for refs, line in zip(merged, extra)]
    return merged
