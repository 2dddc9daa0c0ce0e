"""Every recipe parses, builds its model and runs a training step; the chapter's model family
learns the synthetic reversal task through the CLI, for each cell with and without attention."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import REPO, run_cli
from mtkit.config import load_recipe
from mtkit.data.dataset import DataDir
from mtkit.training.loop import Trainer

RECIPES = sorted((REPO / "recipes").glob("*.toml"))


def test_there_are_recipes():
    assert {"d2l.toml", "gru.toml", "lstm.toml", "gru-attention.toml", "bilstm-attention.toml"} <= {r.name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_builds_and_takes_a_training_step(recipe, reverse_data, tmp_path):
    config = load_recipe(recipe)
    trainer = Trainer(config, DataDir(reverse_data), tmp_path, Console(quiet=True))
    indices = list(range(16))
    loss, tokens, _ = trainer.train_step(indices, config.train.lr)
    assert tokens > 0 and loss / tokens > 0
    assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
def test_each_model_learns_the_reversal_task(cell, attention, reverse_data, tmp_path):
    # Without attention the whole sentence must pass through one state vector: give it room
    # and more steps (a step limit, not a time limit, so a slower machine gets the same model).
    hidden, steps = ("256", "600") if attention == "none" else ("96", "300")
    run_cli(
        "train", "--data", reverse_data, "--out", tmp_path / "run", "--cell", cell, "--attention", attention,
        "--embed", "64", "--hidden", hidden, "--layers", "1", "--lr", "0.01", "--batch-tokens", "2000",
        "--max-steps", steps, "--valid-every", "100", "--train.schedule", "linear", "--seed", "1",
    )
    scores = json.loads(run_cli("evaluate", "--model", tmp_path / "run", "--data", reverse_data, "--json").stdout)
    assert scores["bleu"] >= 90, scores
