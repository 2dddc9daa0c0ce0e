"""Sharing a model: ``mtkit export`` writes a run into one file, ``mtkit info`` says what a model is.

An exported file holds what translation needs and what a user of the model wants to know: the
configuration, the tokeniser and vocabulary files, the weights of one checkpoint (or the average
of the last few) and the training run's summary (the data directory's manifest, the best dev
scores, how long it trained, the mtkit version). ``--model FILE`` reads it wherever a run
directory is accepted (``mtkit.modelfile``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from mtkit import __version__
from mtkit.checkpoint import average_checkpoints, last_checkpoints
from mtkit.config import ModelConfig
from mtkit.errors import MtkitError, UsageError
from mtkit.modelfile import SUFFIX, ModelFile, write_model_file
from mtkit.models.seq2seq import count_parameters
from mtkit.rundir import RunDir, open_model


def export_run(
    run_dir: str | Path, output: str | Path, checkpoint: str | None = None, average: int = 0, force: bool = False
) -> ModelFile:
    """Write the run's configuration, tokenisers, chosen weights (``checkpoint``: best, last, a
    name or a file; or the mean of the last ``average`` numbered checkpoints) and summary into
    ``output``; return the file, read back and checked."""
    output = Path(output)
    if output.is_dir():
        raise UsageError(f"{output} is a directory: give the file to write (e.g. -o model{SUFFIX})")
    if output.exists() and not force:
        raise MtkitError(f"{output} already exists; choose another name or pass --force to replace it")
    if average and checkpoint is not None:
        raise UsageError("give --checkpoint or --average, not both")
    run = RunDir(run_dir)
    weights, origin = chosen_weights(run, checkpoint, average)
    run.build_model(weights, f"{run.path} ({origin})")  # the weights fit the configuration
    files = {info[key]: run.file(info[key]) for info in run.tokenizers.values() for key in ("file", "vocab")}
    config = {key: value for key, value in run.raw.items() if key != "data_dir"}  # a path on this machine
    summary = {**run.summary(), "weights": origin, "exported_with": __version__}
    output.parent.mkdir(parents=True, exist_ok=True)
    write_model_file(output, config, files, weights, summary)
    return ModelFile(output)


def chosen_weights(run: RunDir, checkpoint: str | None, average: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights of a checkpoint, or the mean of the last ``average`` numbered ones, and
    where they come from."""
    if average:
        chosen = last_checkpoints(run.path, average, "--average")
        return average_checkpoints(chosen), {"averaged": [path.name for path in chosen]}
    payload, path = run.weights(checkpoint, "cpu")
    return payload["model"], {"checkpoint": Path(path).name, "step": payload.get("progress", {}).get("step")}


def describe(path: str | Path) -> dict[str, Any]:
    """What the model at ``path`` (a run directory or an exported file) is: languages,
    architecture, parameters, vocabularies, training data, best dev scores, precision, versions."""
    saved = open_model(path)
    model, payload = saved.load_model()
    summary = saved.summary()
    manifest = summary.get("data") or {}
    file = saved.path if isinstance(saved, ModelFile) else saved.path / "best.pt"
    weights = summary.get("weights") or {"checkpoint": "best.pt", "step": payload.get("progress", {}).get("step")}
    return {
        "path": str(saved.path),
        "kind": "model file" if isinstance(saved, ModelFile) else "run directory",
        "source_language": saved.src_lang,
        "target_language": saved.tgt_lang,
        "architecture": architecture(saved.recipe.model),
        "model": dataclasses.asdict(saved.recipe.model),
        "parameters": count_parameters(model),
        "vocabularies": {
            side: {"kind": info["kind"], "size": len(saved.tokenizer(side).vocab)}
            for side, info in saved.tokenizers.items()
        },
        "normalize": saved.recipe.data.normalize,
        "training_data": {
            "splits": manifest.get("splits"),
            "sources": manifest.get("sources"),
        },
        "training": summary.get("training"),
        "best_dev": summary.get("best_dev"),
        "precision": {"training": saved.recipe.train.precision, "weights": weights_dtype(model.state_dict())},
        "weights": weights,
        "size_bytes": os.path.getsize(file) if file.is_file() else None,
        "mtkit_version": {"trained": summary.get("trained_with"), "exported": summary.get("exported_with")},
    }


def architecture(config: ModelConfig) -> str:
    """The model in one line, e.g. ``GRU encoder 1 × 256 bidirectional, linear bridge, GRU
    decoder 1 × 256 with Bahdanau attention, embeddings 256``."""
    cell = config.cell.upper()
    encoder = f"{cell} encoder {config.layers} × {config.hidden}" + (" bidirectional" if config.bidirectional else "")
    attention = {"none": "the fixed context", "bahdanau": "Bahdanau attention", "luong": "Luong attention"}[config.attention]
    decoder = f"{cell} decoder {config.decoder_layers or config.layers} × {config.hidden} with {attention}"
    return f"{encoder}, {config.bridge} bridge, {decoder}, embeddings {config.embed}"


def render(info: dict[str, Any]) -> list[tuple[str, str]]:
    """``describe``'s answer as (label, text) rows for the terminal."""
    vocab = info["vocabularies"]
    splits = info["training_data"]["splits"] or {}
    data = ", ".join(f"{split} {counts['pairs']:,} pairs" for split, counts in splits.items()) or "not recorded"
    files = {
        str(source.get("path"))  # a split's source: one file, or (since ids_format 1) a list of them
        for split in (info["training_data"]["sources"] or {}).values()
        for source in (split if isinstance(split, list) else [split])
    }
    if files:
        data += " (from " + ", ".join(sorted(files)) + ")"
    trained = info["training"] or {}
    best = info["best_dev"] or {}
    weights = info["weights"]
    chosen = f"average of {', '.join(weights['averaged'])}" if "averaged" in weights else f"{weights['checkpoint']} (step {weights.get('step')})"
    size = info["size_bytes"]
    return [
        ("model", f"{info['path']} ({info['kind']})"),
        ("languages", f"{info['source_language']} → {info['target_language']}"),
        ("architecture", info["architecture"]),
        ("parameters", f"{info['parameters']:,}"),
        ("vocabularies", f"source {vocab['src']['size']:,} ({vocab['src']['kind']}), target {vocab['tgt']['size']:,} ({vocab['tgt']['kind']}); normalisation {info['normalize']}"),
        ("training data", data),
        ("trained", _trained(trained)),
        ("best dev", _best(best)),
        ("precision", f"weights {info['precision']['weights']}; trained with --precision {info['precision']['training']}"),
        ("weights", chosen + (f", {size / 1e6:.1f} MB" if size else "")),
        ("mtkit", f"trained with {info['mtkit_version']['trained']}" + (f", exported with {info['mtkit_version']['exported']}" if info["mtkit_version"]["exported"] else "")),
    ]


def _trained(trained: dict[str, Any]) -> str:
    if trained.get("step") is None:
        return "no validation recorded"
    minutes, seconds = divmod(round(trained.get("elapsed") or 0), 60)
    return f"{trained['step']:,} steps ({trained.get('epoch')} full epochs), {minutes}m{seconds:02d}s"


def _best(best: dict[str, Any]) -> str:
    parts = [f"{label} {best[key]:{fmt}}" for key, label, fmt in (("bleu", "BLEU", ".2f"), ("chrf", "chrF", ".1f"), ("loss", "loss", ".3f")) if best.get(key) is not None]
    return ", ".join(parts) or "no validation recorded"


def weights_dtype(weights: dict[str, torch.Tensor]) -> str:
    """The weights' dtypes (``float32``), joined by / where they differ."""
    return "/".join(sorted({str(t.dtype).removeprefix("torch.") for t in weights.values()}))
