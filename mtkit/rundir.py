"""The run directory: everything needed to translate with a trained model, in one place.

RUN_DIR/config.json    the resolved recipe (data options, model, training) and tokeniser files
RUN_DIR/vocab.*, spm.* tokenisers copied from the data directory
RUN_DIR/best.pt        weights with the best dev BLEU; last.pt adds optimizer and progress
RUN_DIR/metrics.jsonl  one line per validation; train.log the training log
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from mtkit import __version__
from mtkit.config import Recipe
from mtkit.data.dataset import DataDir
from mtkit.data.tokenizers import TextProcessor, load_tokenizer
from mtkit.errors import CheckpointError, MtkitError, UsageError
from mtkit.fileio import read_json, write_json
from mtkit.models.seq2seq import Seq2Seq, build_model
from mtkit.training.checkpoint import load_checkpoint


def write_run_config(run_dir: Path, recipe: Recipe, data: DataDir) -> None:
    """Copy the tokenisers in and save the fully resolved configuration as JSON."""
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
            "data_dir": str(data.path),
            "src_lang": data.src_lang,
            "tgt_lang": data.tgt_lang,
            "tokenizers": tokenizers,
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
