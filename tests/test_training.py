"""Training machinery: exact resume, signals, early stopping, averaging, DDP, plots."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, run_cli
from mtkit.training.checkpoint import load_checkpoint

SMALL = ["--embed", "32", "--hidden", "48", "--batch-tokens", "400", "--seed", "3", "--train.log-every", "1"]


def metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # wall-clock figures differ between runs
        row.pop("elapsed"), row.pop("tokens_per_second")
    return rows


def weights(run, name="last"):
    return load_checkpoint(run / f"{name}.pt")["model"]


def test_resumed_run_equals_uninterrupted_run_bitwise(reverse_data, tmp_path):
    common = ["--data", reverse_data, "--layers", "2", "--dropout", "0.3", "--valid-every", "5", *SMALL]
    run_cli("train", *common, "--out", tmp_path / "straight", "--max-steps", "30")
    run_cli("train", *common, "--out", tmp_path / "split", "--max-steps", "15")
    run_cli("train", "--resume", tmp_path / "split", "--max-steps", "30")
    assert metrics(tmp_path / "split") == metrics(tmp_path / "straight")
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigint_saves_a_loadable_checkpoint_and_says_how_to_resume(reverse_data, tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "mtkit", "train", "--data", str(reverse_data), "--out", str(run),
         "--max-steps", "100000", *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not ((run / "train.log").exists() and "step 3 " in (run / "train.log").read_text()):
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert f"mtkit train --resume {run}" in stderr and "Traceback" not in stderr
    state = load_checkpoint(run / "last.pt")
    assert state["progress"]["step"] >= 3
    run_cli("train", "--resume", run, "--max-steps", str(state["progress"]["step"] + 2))
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == state["progress"]["step"] + 2


def test_early_stopping_stops_at_the_right_validation(reverse_data, tmp_path):
    # lr 0: the model never changes, so only the first validation improves; patience 2 stops
    # training at the third validation.
    run = tmp_path / "run"
    result = run_cli("train", "--data", reverse_data, "--out", run, "--lr", "0", "--valid-every", "4",
                     "--max-steps", "1000", "--patience", "2", "--stop-on", "loss", *SMALL)
    steps = [row["step"] for row in metrics(run)]
    assert steps == [4, 8, 12]
    assert "early stopping" in result.stderr


def test_average_of_two_checkpoints_is_their_mean(reverse_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--max-steps", "6", "--valid-every", "3", *SMALL)
    first, second = weights(run, "step-3"), weights(run, "step-6")
    run_cli("average", run, "--last", "2")
    averaged = weights(run, "averaged")
    for name in first:
        torch.testing.assert_close(averaged[name], (first[name] + second[name]) / 2)
    out = run_cli("translate", "--model", run, "--checkpoint", "averaged", input="w1 w2\n").stdout
    assert len(out.splitlines()) == 1


def test_two_process_ddp_matches_one_process(reverse_data, tmp_path):
    common = ["--data", reverse_data, "--layers", "1", "--dropout", "0", "--max-steps", "8",
              "--valid-every", "4", "--batch-tokens", "600", "--embed", "32", "--hidden", "48", "--seed", "5"]
    run_cli("train", *common, "--out", tmp_path / "one")
    env_threads = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "mtkit", "train", *map(str, common), "--out", str(tmp_path / "two"), "--nproc", "2"],
                            capture_output=True, text=True, env=env_threads)
    assert result.returncode == 0, result.stderr
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=2e-4, rtol=1e-3)
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two")):
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files.count("last.pt") == 1 and len(metrics(tmp_path / "two")) == 2
    assert (tmp_path / "two" / "train.log").read_text().count("validation step 4 ") == 1


def test_plot_draws_a_png(reverse_data, tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--max-steps", "4", "--valid-every", "2", *SMALL)
    run_cli("plot", run, run, "-o", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    code = "import sys; sys.modules['matplotlib'] = None; from mtkit.cli import main; main(['plot', '.', '-o', 'x.png'])"
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "elapsed": 1, "train_loss": 1, "dev_loss": 1, "dev_bleu": 1}\n')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "pip install 'mtkit[plot]'" in result.stderr


def test_a_run_without_limits_gets_ten_epochs_recorded_in_its_config():
    from mtkit.config import TrainConfig
    from mtkit.training.loop import check_limits

    unlimited, limited = TrainConfig(), TrainConfig(max_steps=50)
    check_limits(unlimited)
    check_limits(limited)
    assert unlimited.max_epochs == 10
    assert limited.max_epochs is None and limited.max_steps == 50
