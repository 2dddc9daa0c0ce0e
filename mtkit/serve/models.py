"""The models a server holds: a ``Translator`` under a name each, loaded exactly as ``mtkit
translate`` loads them, and the decode function the batching queue calls."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtkit.decoding import SearchOptions
from mtkit.errors import UsageError
from mtkit.modelfile import SUFFIX
from mtkit.rundir import open_model
from mtkit.translate import Translator


def parse_model_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``PATH`` (a run directory or model file, named after it) or ``NAME=PATH``; names must be
    unique."""
    named: list[tuple[str, Path]] = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or "/" in name or not name:
            name, path = Path(spec).resolve().name.removesuffix(SUFFIX), spec
        if any(name == other for other, _ in named):
            raise UsageError(f"two models are named {name!r}: name them with --model NAME=RUN_DIR")
        named.append((name, Path(path)))
    if not named:
        raise UsageError("give at least one --model RUN_DIR")
    return named


@dataclass
class LoadOptions:
    """How every model is loaded: the options of ``mtkit translate`` that apply."""

    checkpoint: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    max_input_len: int = 250
    quantize: str = "none"


@dataclass
class ServedModel:
    name: str
    path: Path
    translator: Translator | None = None  # None until loaded
    info: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Fail early, before the server starts, if the path is not a model."""
        open_model(self.path)

    def load(self, options: LoadOptions) -> None:
        self.translator = Translator(
            self.path, options.checkpoint, options.device, options.max_input_len, options.precision, options.quantize
        )
        self.info = describe(self.name, self.translator)

    @property
    def has_attention(self) -> bool:
        return self.translator is not None and self.translator.model.config.attention != "none"


def describe(name: str, translator: Translator) -> dict[str, Any]:
    """What GET /models says about a model."""
    run = translator.run
    return {
        "name": name,
        "source_language": run.src_lang,
        "target_language": run.tgt_lang,
        "model": dataclasses.asdict(run.recipe.model),
        "tokenizer": run.tokenizers["src"]["kind"],
        "normalize": run.recipe.data.normalize,
        "parameters": sum(p.numel() for p in translator.model.parameters()),
        "best_dev_bleu": round(bleu, 2) if (bleu := run.summary()["best_dev"]["bleu"]) is not None else None,
        "device": str(translator.device),
        "precision": translator.precision,
        "max_input_len": translator.max_input_len,
    }


@dataclass(frozen=True)
class Work:
    """What one request asks of a decode: its model, its search and what to return."""

    model: ServedModel
    options: SearchOptions
    nbest: bool  # return the n-best lists
    attention: bool  # return the attention of each best translation


def decode_jobs(jobs: list) -> list[dict[str, Any]]:
    """Decode the lines of several requests (same model, same search) in one call; return each
    request's part of the answer. Runs on the decode thread."""
    work: Work = jobs[0].payload
    translator = work.model.translator
    lines = [line for job in jobs for line in job.lines]
    found = translator.nbest(lines, work.options)
    answers, start = [], 0
    for job in jobs:
        hyps = found[start : start + len(job.lines)]
        start += len(job.lines)
        answers.append(render(translator, job.lines, hyps, job.payload))
    return answers


def render(translator: Translator, lines: list[str], found: list, work: Work) -> dict[str, Any]:
    answer: dict[str, Any] = {"translations": [hyps[0][0] if hyps else "" for hyps in found]}
    if work.nbest:
        answer["nbest"] = [
            [{"text": text, "score": h.score, "log_prob": h.log_prob} for text, h in hyps] for hyps in found
        ]
    if work.attention:
        answer["attention"] = [attention_of(translator, line, hyps) for line, hyps in zip(lines, found)]
    return answer


def attention_of(translator: Translator, line: str, hyps: list) -> dict[str, Any] | None:
    if not hyps:
        return None
    source, target, weights = translator.attention(line, hyps[0][1].tokens)
    return {"source": source, "target": target, "weights": [[round(w, 4) for w in row] for row in weights.tolist()]}
