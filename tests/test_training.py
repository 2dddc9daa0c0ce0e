"""Training machinery: exact resume, signals, early stopping, averaging, DDP, plots."""

import json
import os
import signal
import socket
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


def test_two_processes_train_as_one_accumulating_their_batches(reverse_data, tmp_path):
    # Each process takes whole batches of --batch-tokens: a step of two processes trains on the
    # two batches that one process with --accumulate 2 sums.
    common = ["--data", reverse_data, "--layers", "1", "--dropout", "0", "--max-steps", "8",
              "--valid-every", "4", "--batch-tokens", "300", "--embed", "32", "--hidden", "48", "--seed", "5"]
    run_cli("train", *common, "--accumulate", "2", "--out", tmp_path / "one")
    env_threads = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "mtkit", "train", *map(str, common), "--out", str(tmp_path / "two"), "--nproc", "2"],
                            capture_output=True, text=True, env=env_threads)
    assert result.returncode == 0, result.stderr
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for name in one:
        torch.testing.assert_close(one[name], two[name], atol=2e-4, rtol=1e-3)
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-3)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["target_tokens"] == b["target_tokens"]
    files = sorted(p.name for p in (tmp_path / "two").iterdir())
    assert files.count("last.pt") == 1 and len(metrics(tmp_path / "two")) == 2
    assert (tmp_path / "two" / "train.log").read_text().count("validation step 4 ") == 1
    assert json.loads((tmp_path / "two" / "config.json").read_text())["world_size"] == 2


def test_accumulating_two_batches_equals_one_batch_of_both(reverse_data, tmp_path):
    from rich.console import Console

    from mtkit.config import Recipe, set_option
    from mtkit.data.dataset import DataDir
    from mtkit.training.loop import Trainer

    def first_update(batch_size: int, accumulate: int) -> tuple[Trainer, list[int]]:
        """One update through the training data path (plan, prefetching thread, grouping)."""
        recipe = Recipe()
        settings = {"model.embed": 16, "model.hidden": 16, "model.layers": 2, "train.label_smoothing": 0.1,
                    "train.batch_size": batch_size, "train.shuffled_batches": True, "train.accumulate": accumulate}
        for dotted, value in settings.items():
            set_option(recipe, dotted, value)
        trainer = Trainer(recipe, DataDir(reverse_data), tmp_path, Console(quiet=True))
        with trainer.prefetch() as updates:
            update = next(updates)
        trainer.train_step(update, lr=0.01)
        trainer.reporter.close()
        assert len(update.batches) == accumulate
        return trainer, sorted(i for batch in update.batches for i in batch.indices.tolist())

    (two, seen_two), (one, seen_one) = first_update(16, 2), first_update(32, 1)
    assert seen_two == seen_one and len(seen_one) == 32  # the same sentences in one update
    for (name, a), b in zip(two.model.named_parameters(), one.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8, msg=name)  # before Adam
        # after Adam, whose first step (g / |g|) magnifies rounding where a gradient is near zero
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("launcher", ["mtkit", "torchrun-c10d"])
def test_two_machines_on_this_host_train_one_run(launcher, reverse_data, tmp_path):
    """Two launches at once, one process each, meeting on 127.0.0.1, as two machines would: one
    run directory (written by rank 0), trained as one process accumulating both batches would,
    to the end of an epoch of 5 batches (the second process gets none in the last update)."""
    common = ["train", "--data", str(reverse_data), "--embed", "8", "--hidden", "8", "--layers", "1", "--dropout", "0",
              "--batch-size", "6001", "--max-epochs", "1", "--seed", "3"]
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1"}
    machines = []
    for node in range(2):
        (tmp_path / f"node{node}").mkdir()
        if launcher == "mtkit":
            command = [sys.executable, "-m", "mtkit", *common, "--out", "run", "--nnodes", "2", "--node-rank", str(node),
                       "--master-addr", "127.0.0.1", "--master-port", str(port), "--nproc", "1"]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                       "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "test",
                       "-m", "mtkit", *common, "--out", "run"]
        machines.append(subprocess.Popen(command, cwd=tmp_path / f"node{node}", env=env, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for machine in machines:
        output = machine.communicate(timeout=300)[0]
        assert machine.returncode == 0, output[-3000:]
    runs = [run for run in (tmp_path / "node0" / "run", tmp_path / "node1" / "run") if run.exists()]
    assert len(runs) == 1  # rank 0's machine: node 0 with mtkit's launcher, either with c10d's
    run = runs[0]
    assert sorted(p.name for p in run.glob("*.pt")) == ["best.pt", "last.pt", "step-3.pt"]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    run_cli(*common, "--out", tmp_path / "one", "--accumulate", "2")
    (row,), (alone,) = metrics(run), metrics(tmp_path / "one")
    assert (row["step"], row["epoch"]) == (alone["step"], alone["epoch"]) == (3, 1)
    assert row["target_tokens"] == alone["target_tokens"]  # the stand-in batch counts for nothing
    assert row["dev_loss"] == pytest.approx(alone["dev_loss"], rel=1e-4)
    for name, value in weights(tmp_path / "one").items():
        torch.testing.assert_close(weights(run)[name], value, atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def ddp_step(reverse_data, tiny_run, tmp_path_factory):
    """tests/ddp_step.py alone and in two processes: one step's gradients, the dev scores."""
    out = tmp_path_factory.mktemp("ddp")
    script = str(REPO / "tests" / "ddp_step.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [script, str(reverse_data), str(tiny_run)]
    subprocess.run([sys.executable, *args, str(out / "one.pt")], check=True, env=env)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          *args, str(out / "two.pt")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    return [torch.load(out / f"{n}.pt", weights_only=True) for n in ("one", "two")]


def test_two_processes_on_a_batch_each_compute_one_process_gradients_on_both(ddp_step):
    # Compared before clipping and Adam, which would hide a wrong loss scale.
    one, two = (result["grads"] for result in ddp_step)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-7)


def test_validation_in_two_processes_scores_as_one(ddp_step):
    one, two = ddp_step
    assert one["decoded"] == [200] and two["decoded"] == [100, 100]  # each process a slice
    assert one["dev"]["bleu"] > 10  # translations that differ, so an order mixed up would show
    assert two["dev"] == one["dev"]


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
