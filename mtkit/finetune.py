"""Fine-tuning a trained run on new data (domain adaptation).

Two steps, as in Joey NMT or fairseq: ``mtkit preprocess NEW --tokenizers-from RUN_DIR`` encodes
new pairs with the run's own tokenisers and vocabularies (``inherited_tokenizers``), and
``mtkit train --init RUN_DIR --data NEW_DIR`` starts from the run's weights with a fresh
optimiser and schedule (``Parent``). A model file from ``mtkit export`` serves for RUN_DIR in
both (read by the same opener as ``--model``). The model's settings come from the run; a different
one given on the command line or in a recipe is refused, as is a data directory encoded with
other tokenisers (compared by content, so a run and its exported file are interchangeable),
because the weights' rows are indexed by the run's vocabularies.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from mtkit.config import DataConfig, Recipe
from mtkit.data.dataset import DataDir
from mtkit.data.tokenizers import TokenizerPair
from mtkit.errors import DataError, UsageError
from mtkit.fileio import file_digest, read_bytes
from mtkit.modelfile import ModelFile
from mtkit.rundir import open_model
from mtkit.training.loop import StartingWeights, Validation, train

# The data settings that decide how text becomes ids: a data directory for fine-tuning must
# have the run's values of all of them.
VOCAB_SETTINGS = (
    "src_lang", "tgt_lang", "normalize", "tokenizer", "min_freq", "vocab_size", "sp_model", "spm_sample",
    "spm_sample_mb", "joint_vocab", "vocab_with_dev",
)
SIDES = {"src": "source", "tgt": "target"}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _differences(given: Iterable[str], wanted: object, have: object, model: Path) -> list[str]:
    """``--key value (MODEL: value)`` for each given setting whose value differs from the model's."""
    return [
        f"{_flag(key)} {getattr(wanted, key)} ({model}: {getattr(have, key)})"
        for key in sorted(given) if getattr(wanted, key) != getattr(have, key)
    ]


def inherited_tokenizers(model: str | Path, config: DataConfig, given: Iterable[str]) -> TokenizerPair:
    """The tokenisers and vocabularies of ``model`` (a run directory or a model file); ``config``'s
    vocabulary settings are set to the model's. A ``given`` setting (flag, override or recipe key)
    that would change them is refused."""
    saved = open_model(model)
    differ = _differences(set(given) & set(VOCAB_SETTINGS), config, saved.recipe.data, saved.path)
    if differ:
        raise UsageError(
            f"--tokenizers-from {saved.path} encodes with that model's tokenisers and vocabularies; "
            "these settings would change them: " + ", ".join(differ)
        )
    for key in VOCAB_SETTINGS:
        setattr(config, key, getattr(saved.recipe.data, key))
    return TokenizerPair(saved.tokenizer("src"), saved.tokenizer("tgt"), str(saved.path.resolve()))


class Parent:
    """The model a fine-tuning run starts from: a run directory and the checkpoint whose weights
    it takes, or a model file and its one set of weights."""

    def __init__(self, path: str | Path, checkpoint: str | None = None) -> None:
        self.model = open_model(path)
        self.checkpoint = checkpoint
        if isinstance(self.model, ModelFile):
            if checkpoint is not None:
                raise UsageError(
                    f"--init-checkpoint chooses among a run directory's checkpoints; {path} is a model "
                    "file holding one set of weights"
                )
            self.weights_file = self.model.path
            self.record = {"model_file": str(self.weights_file.resolve())}
        else:
            self.weights_file = self.model.checkpoint_path(checkpoint)
            self.record = {"run_dir": str(self.model.path.resolve()), "checkpoint": str(self.weights_file.resolve())}

    def keep_model(self, recipe: Recipe, given: Iterable[str]) -> None:
        """Give ``recipe`` the parent's model settings; refuse ``given`` model settings that differ."""
        differ = _differences(given, recipe.model, self.model.recipe.model, self.model.path)
        if differ:
            raise UsageError(
                f"--init {self.model.path} keeps that model's settings; these differ: " + ", ".join(differ)
            )
        recipe.model = self.model.recipe.model

    def check_vocabularies(self, data: DataDir) -> None:
        """Refuse a data directory encoded with other tokenisers, vocabularies or normalisation
        (the tokeniser files compared byte for byte)."""
        problems = []
        for side, name in SIDES.items():
            ours, theirs = self.model.tokenizers[side], data.manifest["tokenizers"][side]
            theirs_file = data.path / theirs["file"]
            if theirs["kind"] != ours["kind"] or read_bytes(theirs_file, "tokeniser file") != self.model.file(ours["file"]):
                problems.append(
                    f"{name} {theirs['kind']} {theirs_file} ({theirs['size']:,} entries) differs from "
                    f"{ours['kind']} {self.model.where(ours['file'])} ({ours['size']:,} entries)"
                )
        for key in ("src_lang", "tgt_lang", "normalize"):
            if data.manifest["options"][key] != getattr(self.model.recipe.data, key):
                problems.append(f"{key} {data.manifest['options'][key]} differs from {getattr(self.model.recipe.data, key)}")
        if problems:
            raise UsageError(
                f"the data directory {data.path} was not encoded like the model {self.model.path}: "
                + "; ".join(problems)
                + f" (preprocess the new data with `mtkit preprocess NEW_DATA --tokenizers-from {self.model.path}`)"
            )

    def starting_weights(self) -> StartingWeights:
        """The weights (checked against the parent's model) and what config.json records of them."""
        model, payload = self.model.load_model(self.checkpoint)
        # a checkpoint's own step, or the step of the checkpoint a model file was exported from
        step = payload.get("progress", payload["meta"]).get("step")
        record = {**self.record, "sha256": file_digest(self.weights_file), "step": step}
        if "parent" in self.model.raw:  # a fine-tuned parent: keep the lineage
            record["parent"] = self.model.raw["parent"]
        at = f" (step {step})" if step is not None else ""
        return StartingWeights(model.state_dict(), record, f"{self.weights_file}{at}")


def fine_tune(
    parent: Parent, recipe: Recipe, data_dir: str | Path, run_dir: str | Path, force: bool = False,
    console: Console | None = None, data_keys: Iterable[str] = (), tensorboard: Path | None = None,
) -> list[Validation]:
    """Train ``recipe`` (with the parent's model settings, see ``Parent.keep_model``) on
    ``data_dir`` from the parent's weights. The data directory and the checkpoint are checked
    before anything is created."""
    parent.check_vocabularies(DataDir(data_dir))
    start = parent.starting_weights()
    return train(recipe, data_dir, run_dir, force, console, data_keys, start, tensorboard)

