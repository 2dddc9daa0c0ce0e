"""Fine-tuning a trained run on new data (domain adaptation).

Two steps, as in Joey NMT or fairseq: ``mtkit preprocess NEW --tokenizers-from RUN_DIR`` encodes
new pairs with the run's own tokenisers and vocabularies (``inherited_tokenizers``), and
``mtkit train --init RUN_DIR --data NEW_DIR`` starts from the run's weights with a fresh
optimiser and schedule (``Parent``). The model's settings come from the run; a different one
given on the command line or in a recipe is refused, as is a data directory encoded with other
tokenisers, because the weights' rows are indexed by the run's vocabularies.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console

from mtkit.config import DataConfig, Recipe
from mtkit.data.dataset import DataDir
from mtkit.data.tokenizers import TokenizerPair
from mtkit.errors import DataError, UsageError
from mtkit.fileio import file_digest
from mtkit.rundir import RunDir
from mtkit.training.loop import StartingWeights, Validation, train

# The data settings that decide how text becomes ids: a data directory for fine-tuning must
# have the run's values of all of them.
VOCAB_SETTINGS = (
    "src_lang", "tgt_lang", "normalize", "tokenizer", "min_freq", "vocab_size", "sp_model", "spm_sample",
    "joint_vocab", "vocab_with_dev",
)
SIDES = {"src": "source", "tgt": "target"}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _differences(given: Iterable[str], wanted: object, have: object, run: Path) -> list[str]:
    """``--key value (RUN_DIR: value)`` for each given setting whose value differs from the run's."""
    return [
        f"{_flag(key)} {getattr(wanted, key)} ({run}: {getattr(have, key)})"
        for key in sorted(given) if getattr(wanted, key) != getattr(have, key)
    ]


def inherited_tokenizers(run_dir: str | Path, config: DataConfig, given: Iterable[str]) -> TokenizerPair:
    """The tokenisers and vocabularies of ``run_dir``; ``config``'s vocabulary settings are set to
    the run's. A ``given`` setting (flag, override or recipe key) that would change them is refused."""
    run = RunDir(run_dir)
    differ = _differences(set(given) & set(VOCAB_SETTINGS), config, run.recipe.data, run.path)
    if differ:
        raise UsageError(
            f"--tokenizers-from {run.path} encodes with that run's tokenisers and vocabularies; "
            "these settings would change them: " + ", ".join(differ)
        )
    for key in VOCAB_SETTINGS:
        setattr(config, key, getattr(run.recipe.data, key))
    return TokenizerPair(run.processor("src").tokenizer, run.processor("tgt").tokenizer, str(run.path.resolve()))


class Parent:
    """The run a fine-tuning run starts from, and the checkpoint whose weights it takes."""

    def __init__(self, run_dir: str | Path, checkpoint: str | None = None) -> None:
        self.run = RunDir(run_dir)
        self.checkpoint = self.run.checkpoint_path(checkpoint)

    def keep_model(self, recipe: Recipe, given: Iterable[str]) -> None:
        """Give ``recipe`` the parent's model settings; refuse ``given`` model settings that differ."""
        differ = _differences(given, recipe.model, self.run.recipe.model, self.run.path)
        if differ:
            raise UsageError(
                f"--init {self.run.path} keeps that run's model settings; these differ: " + ", ".join(differ)
            )
        recipe.model = self.run.recipe.model

    def check_vocabularies(self, data: DataDir) -> None:
        """Refuse a data directory encoded with other tokenisers, vocabularies or normalisation."""
        problems = []
        for side, name in SIDES.items():
            ours, theirs = self.run.tokenizers[side], data.manifest["tokenizers"][side]
            theirs_file, ours_file = data.path / theirs["file"], self.run.path / ours["file"]
            if theirs["kind"] != ours["kind"] or _digest(theirs_file) != _digest(ours_file):
                problems.append(
                    f"{name} {theirs['kind']} {theirs_file} ({theirs['size']:,} entries) differs from "
                    f"{ours['kind']} {ours_file} ({ours['size']:,} entries)"
                )
        for key in ("src_lang", "tgt_lang", "normalize"):
            if data.manifest["options"][key] != getattr(self.run.recipe.data, key):
                problems.append(f"{key} {data.manifest['options'][key]} differs from {getattr(self.run.recipe.data, key)}")
        if problems:
            raise UsageError(
                f"the data directory {data.path} was not encoded like the run {self.run.path}: "
                + "; ".join(problems)
                + f" (preprocess the new data with `mtkit preprocess NEW_DATA --tokenizers-from {self.run.path}`)"
            )

    def starting_weights(self) -> StartingWeights:
        """The checkpoint's weights (checked against the parent's model) and what config.json
        records of them."""
        model, payload = self.run.load_model(str(self.checkpoint))
        step = payload.get("progress", {}).get("step")
        record = {
            "run_dir": str(self.run.path.resolve()),
            "checkpoint": str(self.checkpoint.resolve()),
            "sha256": file_digest(self.checkpoint),
            "step": step,
        }
        if "parent" in self.run.raw:  # a fine-tuned parent: keep the lineage
            record["parent"] = self.run.raw["parent"]
        at = f" (step {step})" if step is not None else ""
        return StartingWeights(model.state_dict(), record, f"{self.checkpoint}{at}")


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


def _digest(path: Path) -> str:
    if not path.is_file():
        raise DataError("tokeniser file not found", path)
    return file_digest(path)
