"""Training machinery: exact resume, signals, early stopping, averaging, DDP, plots."""

import json
import os
import signal
import subprocess
import sys
import time
from unittest import mock

import pytest
import torch

from conftest import REPO, run_cli, signal_during_step
from mtkit.checkpoint import load_checkpoint

SMALL = ["--embed", "32", "--hidden", "48", "--batch-tokens", "400", "--seed", "3", "--train.log-every", "1"]


def metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # wall-clock figures differ between runs
        row.pop("elapsed"), row.pop("tokens_per_second")
    return rows


def weights(run, name="last"):
    return load_checkpoint(run / f"{name}.pt")["model"]


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


def test_an_interrupted_force_run_leaves_the_old_run_as_it_was(reverse_data, tmp_path):
    from rich.console import Console

    from mtkit.config import Recipe, set_option
    from mtkit.errors import Interrupted
    from mtkit.training.loop import Trainer, resume, train

    recipe, quiet, run = Recipe(), Console(quiet=True), tmp_path / "run"
    for dotted, value in {"model.embed": 8, "model.hidden": 8, "train.max_steps": 4, "train.valid_every": 2}.items():
        set_option(recipe, dotted, value)
    train(recipe, reverse_data, run, console=quiet)
    old = {p.name: p.read_bytes() for p in run.iterdir()}
    set_option(recipe, "train.seed", 2)
    with signal_during_step(3), pytest.raises(Interrupted, match=f"{run} is left as it was until this run ends"):
        train(recipe, reverse_data, run, force=True, console=quiet)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == old
    with mock.patch.object(Trainer, "validate", side_effect=RuntimeError("crash")), pytest.raises(RuntimeError):
        train(recipe, reverse_data, run, force=True, console=quiet)  # a crash too
    assert {p.name: p.read_bytes() for p in run.iterdir()} == old
    with pytest.raises(Interrupted, match=r"Resume with: mtkit train --resume .*run\.new$"), signal_during_step(3):
        train(recipe, reverse_data, run, force=True, console=quiet)
    resume(tmp_path / "run.new", {}, console=quiet)  # ends, and takes the old one's place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == 4 and (run / "last.pt").read_bytes() != old["last.pt"]
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 2


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


def test_two_processes_compute_one_process_gradients(reverse_data, tmp_path):
    # Compared before clipping and Adam, which would hide a wrong loss scale.
    script = str(REPO / "tests" / "ddp_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, script, str(reverse_data), str(tmp_path / "one.pt")], check=True, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          script, str(reverse_data), str(tmp_path / "two.pt")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    one, two = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("one", "two"))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-7)


def test_plot_draws_each_curve_of_each_run(reverse_data, tmp_path):
    pytest.importorskip("matplotlib")
    from mtkit.plotting import draw_runs

    run = tmp_path / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--max-steps", "4", "--valid-every", "2", *SMALL)
    rows = metrics(run)
    figure = draw_runs([run, run])
    assert len(figure.axes) == 6  # training loss, dev loss, dev BLEU × steps, time
    for ax, key in zip(figure.axes[::2], ("train_loss", "dev_loss", "dev_bleu")):
        assert len(ax.lines) == 2  # one per run
        assert list(ax.lines[0].get_xdata()) == [2, 4]
        assert list(ax.lines[0].get_ydata()) == [row[key] for row in rows]
    run_cli("plot", run, run, "-o", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install(tmp_path):
    code = "import sys; sys.modules['matplotlib'] = None; from mtkit.cli import main; main(['plot', '.', '-o', 'x.png'])"
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "elapsed": 1, "train_loss": 1, "dev_loss": 1, "dev_bleu": 1}\n')
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "pip install 'mtkit[plot]'" in result.stderr


def test_a_run_without_limits_trains_ten_epochs_recorded_in_its_config(tmp_path):
    pairs = "".join(f"w{i} w{i + 1}\tw{i + 1} w{i}\n" for i in range(12))
    (tmp_path / "pairs.tsv").write_text(pairs)
    run_cli("preprocess", "--train", tmp_path / "pairs.tsv", "--dev", tmp_path / "pairs.tsv", "--tokenizer", "word",
            "--min-freq", "1", "--out", tmp_path / "data")
    result = run_cli("train", "--data", tmp_path / "data", "--out", tmp_path / "run", "--embed", "8", "--hidden", "8",
                     "--batch-size", "6", "--log-every", "1")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["max_epochs"] == 10 and config["train"]["max_steps"] is None
    assert [row["epoch"] for row in metrics(tmp_path / "run")] == list(range(1, 11))  # 2 steps each
    assert "no limit given: training for 10 epochs" in result.stderr
    assert "to go" in result.stderr  # the first progress line says how long the rest takes
