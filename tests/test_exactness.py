"""Exact repeats and exact resumes, under the settings the shipped recipes use (Bahdanau
attention, a bidirectional encoder, the linear schedule) plus dropout between two layers and
label smoothing.

- A run stopped by SIGINT/SIGTERM at any step and resumed ends identical to the straight run:
  weights, best.pt, metrics.jsonl apart from times, and the numbered checkpoints.
- A run stopped by --max-steps N and continued with --resume --max-steps M ends with the straight
  M-step run's weights for every schedule but linear (which decays to the budget's end); its
  metrics hold one extra line, the final validation at N.
- The same command in fresh processes gives the same weights, bit for bit.
- The book's procedure (shuffled sentence batches, truncation) resumes exactly too.
- With --accumulate 2, a signal between an update's batches takes effect after the update.
Batches are made ahead on a background thread throughout (mtkit.data.prefetch).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from unittest import mock

import pytest
import torch
from rich.console import Console

from conftest import run_cli, signal_during_step
from mtkit.checkpoint import load_checkpoint
from mtkit.config import Recipe, set_option
from mtkit.errors import Interrupted
from mtkit.training.loop import Trainer, resume, train

STEPS, VALID_EVERY = 12, 4
SCHEDULES = {
    "constant": {},
    "linear": {},
    "inverse-sqrt": {"warmup": 3},
    "plateau": {"plateau_patience": 1, "plateau_factor": 0.5, "stop_on": "loss"},
}


def recipe(schedule: str, max_steps: int) -> Recipe:
    config = Recipe()
    settings = {
        "model.embed": 16, "model.hidden": 16, "model.layers": 2, "model.dropout": 0.3,
        "train.batch_tokens": 300, "train.label_smoothing": 0.1, "train.valid_every": VALID_EVERY,
        "train.seed": 3, "train.schedule": schedule, "train.max_steps": max_steps, "train.log_every": 1000,
        **{f"train.{key}": value for key, value in SCHEDULES[schedule].items()},
    }
    for dotted, value in settings.items():
        set_option(config, dotted, value)
    return config


def metrics(run, drop_final_at: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # wall-clock figures differ between runs
        row.pop("elapsed"), row.pop("tokens_per_second")
    return [row for row in rows if not (row["final"] and row["step"] == drop_final_at)]


def weights(run, name: str = "last") -> dict[str, torch.Tensor]:
    return load_checkpoint(run / f"{name}.pt")["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, different


def numbered(run) -> list[str]:
    return sorted(p.name for p in run.glob("step-*.pt"))


QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def straight_runs(reverse_data, tmp_path_factory):
    """One uninterrupted run per schedule."""
    root = tmp_path_factory.mktemp("straight")
    for schedule in SCHEDULES:
        train(recipe(schedule, STEPS), reverse_data, root / schedule, console=QUIET)
    return root


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("stop_at", [6, 8])  # between validations, and at one
def test_a_run_stopped_by_a_signal_resumes_to_the_straight_run(schedule, stop_at, straight_runs, reverse_data, tmp_path):
    run = tmp_path / "run"
    with signal_during_step(stop_at), pytest.raises(Interrupted, match=f"stopped by SIGTERM at step {stop_at} "):
        train(recipe(schedule, STEPS), reverse_data, run, console=QUIET)
    assert load_checkpoint(run / "last.pt")["progress"]["step"] == stop_at
    resume(run, {}, console=QUIET)
    straight = straight_runs / schedule
    assert metrics(run) == metrics(straight)
    assert_same_weights(weights(run), weights(straight))
    assert_same_weights(weights(run, "best"), weights(straight, "best"))
    assert numbered(run) == numbered(straight)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("split_at", [6, 8])
def test_a_run_continued_past_its_step_limit(schedule, split_at, straight_runs, reverse_data, tmp_path):
    run = tmp_path / "run"
    train(recipe(schedule, split_at), reverse_data, run, console=QUIET)
    resume(run, {"max_steps": STEPS}, console=QUIET)
    straight = straight_runs / schedule
    # the first part validated once more at its limit (unless that was a validation step anyway)
    assert metrics(run, drop_final_at=split_at) == metrics(straight) or schedule == "linear"
    assert len(metrics(run)) == len(metrics(straight)) + (split_at % VALID_EVERY != 0)
    same = all(torch.equal(a, b) for a, b in zip(weights(run).values(), weights(straight).values()))
    assert same == (schedule != "linear")  # linear decayed towards step split_at, then was raised


def test_the_books_procedure_stopped_by_a_signal_resumes_to_the_straight_run(reverse_data, tmp_path):
    """recipes/d2l.toml's batching: shuffled sentence batches, num_steps truncation, the encoder
    over <pad>; stopped within the first epoch, resumed on the rest of the same batch plan."""
    def book(max_steps: int) -> Recipe:
        config = recipe("constant", max_steps)
        for dotted, value in {
            "train.batch_tokens": None, "train.batch_size": 32, "train.shuffled_batches": True, "train.truncate": 6,
            "model.source_steps": 6, "model.decode_steps": 6, "model.output_init": "pytorch",
        }.items():
            set_option(config, dotted, value)
        return config

    train(book(STEPS), reverse_data, tmp_path / "straight", console=QUIET)
    run = tmp_path / "run"
    with signal_during_step(7), pytest.raises(Interrupted, match="stopped by SIGTERM at step 7 "):
        train(book(STEPS), reverse_data, run, console=QUIET)
    resume(run, {}, console=QUIET)
    assert metrics(run) == metrics(tmp_path / "straight")
    assert_same_weights(weights(run), weights(tmp_path / "straight"))


def test_a_signal_between_accumulated_batches_takes_effect_after_the_update(reverse_data, tmp_path):
    """--accumulate 2: SIGTERM arriving after the first of step 7's two batches stops the run
    once step 7's update is done; resumed, it ends as the straight run (prefetched batches
    dropped at the stop are made again)."""
    def accumulating(max_steps: int) -> Recipe:
        config = recipe("linear", max_steps)
        set_option(config, "train.accumulate", 2)
        return config

    train(accumulating(STEPS), reverse_data, tmp_path / "straight", console=QUIET)
    batches_of_step_7 = []
    original = Trainer.micro_step

    def micro_step(self, batch, scale):
        if self.state.step == 6:
            batches_of_step_7.append(batch)
            if len(batches_of_step_7) == 2:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch, scale)

    run = tmp_path / "run"
    with mock.patch.object(Trainer, "micro_step", micro_step), pytest.raises(Interrupted, match="stopped by SIGTERM at step 7 "):
        train(accumulating(STEPS), reverse_data, run, console=QUIET)
    assert len(batches_of_step_7) == 2
    resume(run, {}, console=QUIET)
    assert metrics(run) == metrics(tmp_path / "straight")
    assert_same_weights(weights(run), weights(tmp_path / "straight"))
    assert_same_weights(weights(run, "best"), weights(tmp_path / "straight", "best"))


def test_resume_from_another_working_directory(reverse_data, tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    data = os.path.relpath(reverse_data, tmp_path / "a")
    run_cli("train", "--data", data, "--out", "run", "--embed", "8", "--hidden", "8", "--max-steps", "2",
            "--valid-every", "2", cwd=tmp_path / "a")
    run_cli("train", "--resume", tmp_path / "a" / "run", "--max-steps", "3", cwd=tmp_path / "b")
    assert load_checkpoint(tmp_path / "a" / "run" / "last.pt")["progress"]["step"] == 3


def test_the_same_command_in_fresh_processes_gives_the_same_weights(reverse_data, tmp_path):
    command = ["train", "--data", reverse_data, "--embed", "24", "--hidden", "24", "--layers", "2",
               "--dropout", "0.3", "--label-smoothing", "0.1", "--batch-tokens", "500", "--max-steps", "16",
               "--valid-every", "8", "--seed", "11"]
    runs = [tmp_path / str(i) for i in range(3)]
    for run in runs:
        run_cli(*command, "--out", run)
    for run in runs[1:]:
        assert metrics(run) == metrics(runs[0])
        assert_same_weights(weights(run), weights(runs[0]))


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch does not use Intel MKL")
def test_importing_mtkit_makes_matrix_products_independent_of_the_thread_count():
    # Without MKL_CBWR (set by mtkit before torch starts) the last bits of this product, the
    # shape of a packed RNN's last steps, change with the thread count on MKL builds.
    code = ("import mtkit, torch; torch.manual_seed(0); a, b = torch.randn(7, 128), torch.randn(128, 384); "
            "torch.set_num_threads(1); one = a @ b; torch.set_num_threads(2); print(torch.equal(one, a @ b))")
    env = {key: value for key, value in os.environ.items() if key != "MKL_CBWR"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "True", result.stderr


@pytest.mark.slow
def test_six_fresh_processes_on_the_real_corpus_agree(fra_eng_zip, tmp_path):
    """The report behind issue 10: six straight runs of one command on a 6,000-pair slice."""
    run_cli("preprocess", fra_eng_zip, "--max-examples", "6000", "--dev-size", "200", "--test-size", "200",
            "--vocab-size", "2000", "--out", tmp_path / "data")
    command = ["train", "--data", tmp_path / "data", "--seed", "11", "--batch-size", "48", "--hidden", "128",
               "--embed", "64", "--schedule", "linear", "--label-smoothing", "0.1", "--dropout", "0.3",
               "--valid-every", "30", "--max-steps", "150", "--layers", "2"]
    runs = [tmp_path / f"run{i}" for i in range(6)]
    for run in runs:
        run_cli(*command, "--out", run)
    for run in runs[1:]:
        assert metrics(run) == metrics(runs[0])
        assert_same_weights(weights(run), weights(runs[0]))
