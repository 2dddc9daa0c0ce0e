"""`mtkit train --tensorboard DIR`: the event files hold the curves and examples it promises, a
resumed run adds to them, and without the optional package one line says how to install it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

TINY = ("--embed", "16", "--hidden", "16", "--attention", "luong", "--batch-tokens", "2000", "--seed", "1")


def read_events(log_dir: Path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard package is not installed (pip install 'mtkit[tensorboard]')",
    )
    events = event_accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return events


def test_tensorboard_logs_training_and_validation(reverse_data, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install 'mtkit[tensorboard]')")
    board = tmp_path / "tb"
    run_cli("train", "--data", reverse_data, "--out", tmp_path / "run", *TINY, "--max-steps", "6",
            "--valid-every", "3", "--tensorboard", board)
    run_cli("train", "--resume", tmp_path / "run", "--max-steps", "9", "--tensorboard", board)
    events = read_events(board)
    scalars = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    assert set(scalars) == {"train/loss", "train/lr", "train/tokens_per_second", "dev/loss", "dev/bleu", "dev/chrf"}
    assert [e.step for e in scalars["train/loss"]] == list(range(1, 10))  # the resumed run continues the curve
    assert [e.step for e in scalars["dev/bleu"]] == [3, 6, 9]
    assert all(e.value > 0 for e in scalars["train/loss"] + scalars["train/tokens_per_second"] + scalars["dev/loss"])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for tag, key in (("dev/bleu", "dev_bleu"), ("dev/loss", "dev_loss"), ("dev/chrf", "dev_chrf")):
        assert [e.value for e in scalars[tag]] == pytest.approx([m[key] for m in metrics], rel=1e-6)
    learning_rates = {e.step: e.value for e in scalars["train/lr"]}
    assert [learning_rates[m["step"]] for m in metrics] == pytest.approx([m["lr"] for m in metrics], rel=1e-6)
    texts = events.Tensors("dev/examples/text_summary")
    assert [t.step for t in texts] == [3, 6, 9]
    table = texts[-1].tensor_proto.string_val[0].decode()
    dev_source = (reverse_data / "dev.en").read_text().splitlines()[0]
    assert table.startswith("| source | reference | translation |") and dev_source in table
    assert len(table.splitlines()) == 2 + 5


def test_tensorboard_missing_says_how_to_install_it(reverse_data, tmp_path):
    # A package of that name that cannot be imported stands in for its absence.
    (tmp_path / "shadow" / "tensorboard").mkdir(parents=True)
    (tmp_path / "shadow" / "tensorboard" / "__init__.py").write_text("raise ImportError('no tensorboard here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "mtkit", "train", "--data", reverse_data, "--out", tmp_path / "run", *TINY,
         "--max-steps", "2", "--tensorboard", tmp_path / "tb"],
        capture_output=True, text=True, env=env,
    )
    assert result.returncode == 1
    assert result.stderr == "mtkit: error: --tensorboard needs the tensorboard package: pip install 'mtkit[tensorboard]'\n"
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()
