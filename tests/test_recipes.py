"""Every recipe parses, builds its model and runs a training step; the chapter's model family
learns the synthetic reversal task through the CLI, for each cell with and without attention."""

import json
import math
import re

import numpy as np
import pytest
from rich.console import Console

from conftest import REPO, run_cli
from mtkit.config import ModelConfig, TrainConfig, load_recipe, read_toml
from mtkit.data.batching import Update, make_batch
from mtkit.data.dataset import DataDir
from mtkit.training.loop import Trainer

RECIPES = sorted((REPO / "recipes").glob("*.toml"))


# The [train] settings that shape the model's optimisation; the others are limits, validation,
# seed and hardware (a recipe's 10-minute budget and bf16 are choices for its benchmark machine).
OPTIMISER = {"lr", "schedule", "warmup", "plateau_factor", "plateau_patience", "batch_tokens", "batch_size",
             "clip_norm", "label_smoothing", "truncate"}


def test_flag_defaults_are_the_best_recipes_model_and_optimiser():
    # The best recipe is the Makefile's default RECIPE (the README's table says which and why).
    best = re.search(r"^RECIPE \?= (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    settings = read_toml(REPO / best)
    model, train = ModelConfig(), TrainConfig()
    assert {key: getattr(model, key) for key in settings["model"]} == settings["model"]
    assert {key: getattr(train, key) for key in settings["train"] if key in OPTIMISER} == {
        key: value for key, value in settings["train"].items() if key in OPTIMISER
    }
    # what the recipe leaves out is the default, so the two are one model
    assert load_recipe(REPO / best).model == model


def test_there_are_recipes():
    assert {"d2l.toml", "gru.toml", "lstm.toml", "gru-attention.toml", "bilstm-attention.toml"} <= {r.name for r in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_recipe_builds_and_learns_from_a_batch(recipe, reverse_data, tmp_path):
    config = load_recipe(recipe)
    trainer = Trainer(config, DataDir(reverse_data), tmp_path, Console(quiet=True))
    split, indices, truncate = trainer.train_split, np.arange(16), config.train.truncate
    update = Update(0, 0, 1, 1, [make_batch(split, indices, truncate)], split.target_tokens(indices, truncate))
    loss, tokens, _ = trainer.train_step(update, lr=1e-4)
    assert tokens == update.tokens  # every target token, <eos> included
    # a fresh model predicts about uniformly: its mean cross-entropy is about ln |V|
    vocab = trainer.model.generator.out_features
    assert math.log(vocab) - 0.5 < loss / tokens < math.log(vocab) + 1.0
    assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)
    again, _, _ = trainer.train_step(update, config.train.lr)
    assert again < loss  # a small step along the gradient lowered the batch's loss


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention", ["none", "luong", "bahdanau"])
def test_each_model_learns_the_reversal_task(cell, attention, reverse_data, tmp_path):
    # Without attention the whole sentence must pass through one state vector: give it room
    # and more steps (a step limit, not a time limit, so a slower machine gets the same model).
    hidden, steps = ("256", "600") if attention == "none" else ("96", "300")
    run_cli(
        "train", "--data", reverse_data, "--out", tmp_path / "run", "--cell", cell, "--attention", attention,
        "--embed", "64", "--hidden", hidden, "--layers", "1", "--unidirectional", "--bridge", "last",
        "--lr", "0.01", "--batch-tokens", "2000",
        "--max-steps", steps, "--valid-every", "100", "--train.schedule", "linear", "--seed", "1",
    )
    scores = json.loads(run_cli("evaluate", "--model", tmp_path / "run", "--data", reverse_data, "--json").stdout)
    assert scores["bleu"] >= 90, scores
