"""The run directory: everything needed to translate with a trained model, in one place.

RUN_DIR/config.json    the resolved recipe (data options, model, training) and tokeniser files
RUN_DIR/vocab.*, spm.* tokenisers copied from the data directory
RUN_DIR/best.pt        weights with the best dev score; last.pt adds optimiser and progress
RUN_DIR/metrics.jsonl  one line per validation; train.log the training log

A run that replaces an existing directory (``--force``) trains beside it, in RUN_DIR.new, and is
swapped in when it ends; stopped before that, it leaves RUN_DIR as it was.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mtkit import __version__
from mtkit.checkpoint import load_checkpoint
from mtkit.config import Recipe, TrainConfig
from mtkit.data.dataset import DataDir
from mtkit.data.tokenizers import TextProcessor, load_tokenizer
from mtkit.errors import CheckpointError, MtkitError, UsageError
from mtkit.fileio import check_output_dir, read_json, replace_dir, write_json
from mtkit.models.seq2seq import Seq2Seq, build_model

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
    run_dir: Path, recipe: Recipe, data: DataDir, processes: int, parent: dict[str, Any] | None = None
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
            "processes": processes,  # a resumed run must use as many
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
            "tokenizers": tokenizers,
            **({"parent": parent} if parent else {}),
            **config,
        },
    )


class RunDir:
    """A trained model's directory: its configuration, tokenisers and checkpoints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise MtkitError(f"{self.path}: not a run directory (no config.json); train one with `mtkit train`")
        raw = read_json(self.path / "config.json")
        try:
            self.recipe = Recipe.from_dict(
                {k: raw[k] for k in ("data", "model", "train")}, str(self.path / "config.json")
            )
            self.src_lang, self.tgt_lang = raw["src_lang"], raw["tgt_lang"]
            self.tokenizers: dict[str, dict[str, Any]] = raw["tokenizers"]
        except KeyError as exc:
            raise UsageError(f"{self.path / 'config.json'}: missing entry {exc}") from None
        self.raw = raw
        self.processes = int(raw.get("processes", 1))

    def check_processes(self, processes: int) -> None:
        """A run resumes in as many processes as it trained in: the batches, the position in the
        epoch and every process's random state depend on it."""
        if processes != self.processes:
            raise UsageError(
                f"{self.path} was trained in {self.processes} process(es): resume it with "
                f"--nproc {self.processes} (not {processes}), so that it sees the same batches"
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

    def processor(self, side: str) -> TextProcessor:
        info = self.tokenizers[side]
        lang = self.src_lang if side == "src" else self.tgt_lang
        return TextProcessor(lang, self.recipe.data.normalize, load_tokenizer(info["kind"], self.path / info["file"]))

    def checkpoint_path(self, name: str | None = None) -> Path:
        """``best`` (default), ``last``, another checkpoint of the run by name (``averaged``,
        ``step-1000``), or a path to a checkpoint file."""
        if name is None:
            return self.path / "best.pt"
        in_run = self.path / f"{name}.pt"
        return in_run if in_run.exists() or name in ("best", "last") else Path(name)

    def load_model(
        self, checkpoint: str | None = None, device: str | torch.device = "cpu"
    ) -> tuple[Seq2Seq, dict[str, Any]]:
        """Rebuild the model from config.json and load the checkpoint's weights into it."""
        src_size = len(self.processor("src").tokenizer.vocab)
        tgt_size = len(self.processor("tgt").tokenizer.vocab)
        model = build_model(self.recipe.model, src_size, tgt_size)
        path = self.checkpoint_path(checkpoint)
        payload = load_checkpoint(path, map_location=device)
        try:
            model.load_state_dict(payload["model"])
        except RuntimeError as exc:
            detail = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
            raise CheckpointError(
                f"{path}: does not match the model described in config.json "
                f"(vocabulary {src_size}/{tgt_size}): {detail[:200]}"
            ) from None
        model.to(device).eval()
        return model, payload
