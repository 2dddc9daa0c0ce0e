"""The command line's own promises: every recipe setting has a flag with a help text that
survives the console, the commands agree on their device defaults, and a recipe's data settings
are checked against the data directory it trains on."""

import dataclasses
import os

import pytest
import typer.main
from rich.text import Text

from conftest import REPO, run_cli
from mtkit.cli import app
from mtkit.config import DataConfig, ModelConfig, TrainConfig

COMMANDS = typer.main.get_command(app).commands


def options(command: str) -> dict[str, object]:
    return {param.name: param for param in COMMANDS[command].params}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_help_text_loses_brackets_to_console_markup(command):
    for param in COMMANDS[command].params:
        text = getattr(param, "help", None) or ""
        assert Text.from_markup(text).plain == text.replace("\\[", "["), (command, param.name)


def test_help_shows_bracketed_defaults():
    env = {**os.environ, "COLUMNS": "400"}
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "mtkit", "translate", "--help"], capture_output=True, text=True, env=env).stdout
    assert "[default: 512/beam]; results never depend on it" in shown
    shown = subprocess.run([sys.executable, "-m", "mtkit", "train", "--help"], capture_output=True, text=True, env=env).stdout
    assert f"[default: {TrainConfig().lr}]" in shown and "[default: 10 when no limit is given]" in shown


@pytest.mark.parametrize(("command", "config"), [("preprocess", DataConfig), ("train", ModelConfig), ("train", TrainConfig)])
def test_every_recipe_setting_has_a_flag(command, config):
    flags = options(command)
    missing = [field.name for field in dataclasses.fields(config) if field.name not in flags]
    assert not missing


def test_train_translate_and_evaluate_agree_on_the_device():
    assert TrainConfig().device == "auto"
    assert options("translate")["device"].default == options("evaluate")["device"].default == "auto"
    assert options("translate")["precision"].default == options("evaluate")["precision"].default == "auto"


def test_training_on_data_made_by_another_recipe_warns_once(reverse_data, tmp_path):
    result = run_cli("train", "--recipe", REPO / "recipes" / "gru-attention.toml", "--data", reverse_data,
                     "--out", tmp_path / "run", "--embed", "8", "--hidden", "8", "--max-steps", "1",
                     "--max-time", "none", "--precision", "fp32")
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mtkit: warning:")]
    assert len(warnings) == 1
    assert "tokenizer 'word' (recipe: 'sentencepiece')" in warnings[0] and "vocab_size" not in warnings[0]
