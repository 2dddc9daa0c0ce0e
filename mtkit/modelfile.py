"""Trained models as translation reads them: a run directory, or one ``.mtkit`` file.

``SavedModel`` is what both give: the resolved configuration, the tokenisers, the weights and a
summary of the training run. ``RunDir`` (``mtkit.rundir``) reads them from a run's files;
``ModelFile`` from one file written by ``mtkit export``, which holds the same configuration, the
tokeniser and vocabulary files as bytes, one set of weights and the summary. The file is a
``torch.save`` dictionary of tensors and plain data only, read with ``weights_only=True`` (a
file from a stranger cannot run code) and checked against a SHA-256 over all of its content
(a truncated or corrupted file is refused, never loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mtkit.checkpoint import content_checksum, safe_load
from mtkit.config import Recipe
from mtkit.data.tokenizers import TextProcessor, Tokenizer, tokenizer_from_bytes
from mtkit.errors import CheckpointError, UsageError
from mtkit.fileio import atomic_write
from mtkit.models.seq2seq import Seq2Seq, build_model

FORMAT = "mtkit-model"
FORMAT_VERSION = 1
SUFFIX = ".mtkit"


class SavedModel:
    """A trained model's configuration (``config.json``), tokenisers, weights and summary."""

    path: Path

    def __init__(self, path: Path, raw: dict[str, Any], origin: str) -> None:
        self.path = path
        try:
            self.recipe = Recipe.from_dict({k: raw[k] for k in ("data", "model", "train")}, origin)
            self.src_lang, self.tgt_lang = raw["src_lang"], raw["tgt_lang"]
            self.tokenizers: dict[str, dict[str, Any]] = raw["tokenizers"]
        except KeyError as exc:
            raise UsageError(f"{origin}: missing entry {exc}") from None
        self.raw = raw
        self._loaded: dict[str, Tokenizer] = {}

    def tokenizer(self, side: str) -> Tokenizer:
        """The ``src`` or ``tgt`` tokeniser (read once)."""
        if side not in self._loaded:
            info = self.tokenizers[side]
            self._loaded[side] = tokenizer_from_bytes(info["kind"], self.file(info["file"]), self.where(info["file"]))
        return self._loaded[side]

    def processor(self, side: str) -> TextProcessor:
        lang = self.src_lang if side == "src" else self.tgt_lang
        return TextProcessor(lang, self.recipe.data.normalize, self.tokenizer(side))

    def load_model(
        self, checkpoint: str | None = None, device: str | torch.device = "cpu"
    ) -> tuple[Seq2Seq, dict[str, Any]]:
        """Rebuild the model from the configuration and load the weights (``checkpoint``: which
        of a run's checkpoints) into it; also return what the weights came with."""
        payload, origin = self.weights(checkpoint, device)
        return self.build_model(payload["model"], origin, device), payload

    def build_model(self, weights: dict[str, torch.Tensor], origin: str, device: str | torch.device = "cpu") -> Seq2Seq:
        """The model of the configuration with ``weights`` (read from ``origin``) loaded."""
        src_size, tgt_size = (len(self.tokenizer(side).vocab) for side in ("src", "tgt"))
        model = build_model(self.recipe.model, src_size, tgt_size)
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            detail = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
            raise CheckpointError(
                f"{origin}: does not match the model described in its configuration "
                f"(vocabulary {src_size}/{tgt_size}): {detail[:200]}"
            ) from None
        return model.to(device).eval()

    # What each kind of saved model reads its own way.
    def file(self, name: str) -> bytes:
        """One of the tokeniser and vocabulary files (named in ``tokenizers``): its bytes."""
        raise NotImplementedError

    def where(self, name: str) -> str:
        """Where that file is, for messages."""
        raise NotImplementedError

    def weights(self, checkpoint: str | None, device: str | torch.device) -> tuple[dict[str, Any], str]:
        """A checkpoint-like dictionary (``model``: the state dict) and the name of its file."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """What the training run left to know about it: the data directory's manifest, the best
        dev scores, how long it trained, the mtkit version that trained it."""
        raise NotImplementedError


class ModelFile(SavedModel):
    """A model exported into one file by ``mtkit export``."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        content = safe_load(path, "model file")
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not an mtkit model file (write one with `mtkit export`)")
        if content.get("format_version") != FORMAT_VERSION:
            raise CheckpointError(
                f"{path}: model file format {content.get('format_version')!r}; this mtkit reads format {FORMAT_VERSION}"
            )
        stored = content.pop("checksum", None)
        if stored != content_checksum(content):
            raise CheckpointError(f"{path}: corrupted model file (checksum mismatch)")
        self.content = content
        super().__init__(path, content["config"], f"{path} (config)")

    def file(self, name: str) -> bytes:
        return self.content["files"][name]

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    def weights(self, checkpoint: str | None, device: str | torch.device) -> tuple[dict[str, Any], str]:
        if checkpoint is not None:
            raise UsageError(f"{self.path} holds one set of weights: --checkpoint is for run directories")
        model = {name: tensor.to(device) for name, tensor in self.content["model"].items()}
        return {"model": model, "meta": self.content["summary"].get("weights", {})}, str(self.path)

    def summary(self) -> dict[str, Any]:
        return self.content["summary"]


def write_model_file(
    path: str | Path, config: dict[str, Any], files: dict[str, bytes], weights: dict[str, torch.Tensor],
    summary: dict[str, Any],
) -> None:
    """Write a model file atomically: the configuration, the tokeniser and vocabulary files,
    the weights (on the CPU) and the summary, with a checksum over all of it."""
    content = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": config,
        "files": files,
        "model": {name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()},
        "summary": summary,
    }
    content["checksum"] = content_checksum(content)
    with atomic_write(path, binary=True) as handle:
        torch.save(content, handle)
