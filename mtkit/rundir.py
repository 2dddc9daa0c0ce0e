"""The run directory: everything needed to translate with a trained model, in one place.

RUN_DIR/config.json    the resolved recipe (data options, model, training) and tokeniser files
RUN_DIR/vocab.*, spm.* tokenisers copied from the data directory
RUN_DIR/best.pt        weights with the best dev score; last.pt adds optimiser and progress
RUN_DIR/metrics.jsonl  one line per validation; train.log the training log

A run that replaces an existing directory (``--force``) trains beside it, in RUN_DIR.new, and is
swapped in when it ends; stopped before that, it leaves RUN_DIR as it was.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtkit import __version__
from mtkit.checkpoint import load_checkpoint
from mtkit.config import Recipe, TrainConfig
from mtkit.data.dataset import DataDir
from mtkit.errors import MtkitError, UsageError
from mtkit.fileio import check_output_dir, read_bytes, read_json, replace_dir, write_json
from mtkit.modelfile import ModelFile, SavedModel
from mtkit.plotting import read_metrics

REPLACES = "REPLACES"  # in a staged run directory: the name of the directory it replaces


def new_run_dir(path: str | Path, force: bool) -> Path:
    """Create the directory a new run trains in and return it.

    A new (or empty) ``path`` is used as it is, so a stopped run resumes there. An existing one
    (only with ``force``) stays as it was while the run trains in ``path.new``, which replaces
    it when the run ends (``finish_run_dir``); a run stopped before then resumes from there.
    """
    path = check_output_dir(path, force, "run directory")
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        path.mkdir(parents=True, exist_ok=True)
        return path
    staging = path.with_name(path.name + ".new")
    if staging.exists():
        if not (staging / REPLACES).is_file():
            raise MtkitError(f"{staging} exists and is not a stopped run of {path}: move it away first")
        shutil.rmtree(staging)  # an earlier replacement of path that never ended
    staging.mkdir()
    (staging / REPLACES).write_text(path.name + "\n", encoding="utf-8")
    return staging


def replaced_by(run_dir: Path) -> Path | None:
    """The directory a staged run will replace when it ends (None for an ordinary run)."""
    marker = run_dir / REPLACES
    return run_dir.parent / marker.read_text(encoding="utf-8").strip() if marker.is_file() else None


def finish_run_dir(run_dir: Path) -> Path:
    """Swap a staged run that has ended into the directory it replaces; return where it is."""
    target = replaced_by(run_dir)
    if target is None:
        return run_dir
    (run_dir / REPLACES).unlink()
    replace_dir(run_dir, target)
    return target


def save_run_config(
    run_dir: Path, recipe: Recipe, data: DataDir, world_size: int, parent: dict[str, Any] | None = None
) -> None:
    """Copy the tokenisers in and save the fully resolved configuration as JSON; ``parent``
    records the run a fine-tuning run starts from."""
    tokenizers = {}
    for side, info in data.manifest["tokenizers"].items():
        for key in {"file", "vocab"}:
            shutil.copyfile(data.path / info[key], run_dir / info[key])
        tokenizers[side] = info
    config = recipe.to_dict()
    config["data"] = data.manifest["options"]
    write_json(
        run_dir / "config.json",
        {
            "mtkit_version": __version__,
            "data_dir": str(data.path.resolve()),  # absolute: --resume works from anywhere
            "world_size": world_size,  # processes on all machines: a resumed run must use as many
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
            "tokenizers": tokenizers,
            **({"parent": parent} if parent else {}),
            **config,
        },
    )


class RunDir(SavedModel):
    """A trained model's directory: its configuration, tokenisers and checkpoints."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise MtkitError(f"{path}: not a run directory (no config.json); train one with `mtkit train`")
        super().__init__(path, read_json(path / "config.json"), str(path / "config.json"))
        # "processes": an older mtkit, which divided the batch among its processes
        self.world_size = int(self.raw.get("world_size", self.raw.get("processes", 1)))

    def check_processes(self, processes: int) -> None:
        """A run resumes in as many processes as it trained in: the batches, the position in the
        epoch and every process's random state depend on it."""
        if "world_size" not in self.raw and self.world_size > 1:
            raise UsageError(
                f"{self.path} was trained by an older mtkit, which divided --batch-tokens among its "
                f"{self.world_size} processes: it cannot resume with the same batches"
            )
        if processes != self.world_size:
            raise UsageError(
                f"{self.path} was trained in {self.world_size} process(es) in all: resume it in as many "
                f"(--nproc × --nnodes = {self.world_size}, not {processes}), so that it sees the same batches"
            )

    def data_dir(self) -> DataDir:
        """The data directory the run trained on (for --resume)."""
        path = Path(self.raw["data_dir"])
        if not path.is_absolute():  # written by an earlier version, relative to where it ran
            path = path.resolve()
        if not (path / "manifest.json").is_file():
            raise MtkitError(f"{self.path}: its data directory {path} is gone; --resume needs it")
        return DataDir(path)

    def save_train_config(self, train: TrainConfig) -> None:
        """Record changed training settings (the raised limits of a resumed run)."""
        write_json(self.path / "config.json", {**self.raw, "train": asdict(train)})

    def file(self, name: str) -> bytes:
        return read_bytes(self.path / name, "tokeniser file")

    def where(self, name: str) -> str:
        return str(self.path / name)

    def checkpoint_path(self, name: str | None = None) -> Path:
        """``best`` (default), ``last``, another checkpoint of the run by name (``averaged``,
        ``step-1000``), or a path to a checkpoint file."""
        if name is None:
            return self.path / "best.pt"
        in_run = self.path / f"{name}.pt"
        return in_run if in_run.exists() or name in ("best", "last") else Path(name)

    def weights(self, checkpoint: str | None, device: str | torch.device) -> tuple[dict[str, Any], str]:
        path = self.checkpoint_path(checkpoint)
        return load_checkpoint(path, map_location=device), str(path)

    def summary(self) -> dict[str, Any]:
        validations = [m for m in self.metrics() if isinstance(m.get("dev_loss"), (int, float))]
        best: dict[str, Any] = {}
        for metric, pick in (("bleu", max), ("chrf", max), ("loss", min)):
            scores = [m[f"dev_{metric}"] for m in validations if isinstance(m.get(f"dev_{metric}"), (int, float))]
            scores = [score for score in scores if not math.isnan(score)]
            best[metric] = pick(scores) if scores else None
        last = validations[-1] if validations else {}
        return {
            "trained_with": self.raw.get("mtkit_version"),
            "data": self._data_manifest(),
            "best_dev": best,
            "training": {key: last.get(key) for key in ("step", "epoch", "elapsed", "target_tokens")},
        }

    def metrics(self) -> list[dict[str, Any]]:
        """The run's validations (metrics.jsonl), oldest first; none for a run not validated yet."""
        return read_metrics(self.path) if (self.path / "metrics.jsonl").is_file() else []

    def _data_manifest(self) -> dict[str, Any] | None:
        """The manifest of the data directory the run trained on, if it is still there."""
        path = Path(self.raw.get("data_dir", "")) / "manifest.json"
        return read_json(path) if self.raw.get("data_dir") and path.is_file() else None


def open_model(path: str | Path) -> SavedModel:
    """The trained model at ``path``: a run directory, or a file written by ``mtkit export``."""
    path = Path(path)
    if not path.exists():
        raise MtkitError(f"{path}: no such run directory or model file")
    return RunDir(path) if path.is_dir() else ModelFile(path)
