"""Shared fixtures: synthetic corpora, the shared Tatoeba archive and a CLI runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

# Threads that wait for work sleep instead of spinning: the tests' tiny models run many short
# parallel sections, and on a busy machine spinning threads burned ten times the CPU time.
# Set before torch starts; inherited by every command the tests run.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

from synthetic import make_task, write_tsv  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHARED_ZIP = Path(os.environ.get("MTKIT_TEST_DATA") or REPO.parent / "shared" / "data" / "fra-eng.zip")


def signal_during_step(step: int, signum: int = signal.SIGTERM):
    """Patch training so that this process gets ``signum`` while step ``step`` computes, as from
    Ctrl-C or a scheduler: the real signal, through the real handler, at a known step."""
    from mtkit.training.loop import Trainer

    original = Trainer.train_step

    def train_step(self, indices, lr):
        if self.state.step == step - 1:
            os.kill(os.getpid(), signum)
        return original(self, indices, lr)

    return mock.patch.object(Trainer, "train_step", train_step)


def run_cli(*args: str, input: str | None = None, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m mtkit ARGS`` as a user would, capturing text output."""
    result = subprocess.run(
        [sys.executable, "-m", "mtkit", *map(str, args)],
        input=input, capture_output=True, text=True, cwd=cwd,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mtkit {' '.join(map(str, args))} failed ({result.returncode}):\n{result.stderr}")
    return result


def cli_error(*args: str, status: int = 1, input: str | None = None) -> str:
    """Run a command that must fail as mtkit fails on bad input: exit ``status``, one line on
    stderr (``mtkit: error: ...``), no traceback. Return the message."""
    result = run_cli(*args, input=input, check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == status and len(lines) == 1, (result.returncode, result.stderr)
    assert lines[0].startswith("mtkit: error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0].removeprefix("mtkit: error: ")


@pytest.fixture(scope="session")
def fra_eng_zip() -> Path:
    if not SHARED_ZIP.is_file():
        pytest.skip(f"integration test: no Tatoeba archive at {SHARED_ZIP} (set DATA=... or put it in ../shared/data)")
    return SHARED_ZIP


@pytest.fixture(scope="session")
def reverse_task(tmp_path_factory) -> dict[str, Path]:
    """TSV files of a word-reversal task: train 30k, dev 200, test 200 pairs."""
    root = tmp_path_factory.mktemp("reverse")
    return {
        "train": write_tsv(root / "train.tsv", make_task("reverse", 30_000, seed=1)),
        "dev": write_tsv(root / "dev.tsv", make_task("reverse", 200, seed=2)),
        "test": write_tsv(root / "test.tsv", make_task("reverse", 200, seed=3)),
    }


@pytest.fixture(scope="session")
def reverse_data(reverse_task, tmp_path_factory) -> Path:
    """A preprocessed data directory of the reversal task (word tokens)."""
    out = tmp_path_factory.mktemp("reverse-data") / "data"
    run_cli(
        "preprocess", "--train", reverse_task["train"], "--dev", reverse_task["dev"],
        "--test", reverse_task["test"], "--tokenizer", "word", "--min-freq", "1", "--out", out,
    )
    return out


@pytest.fixture(scope="session")
def tiny_run(reverse_data, tmp_path_factory) -> Path:
    """A small attention model of the reversal task (trained in seconds), for serving tests."""
    return train_tiny(reverse_data, tmp_path_factory.mktemp("tiny") / "run")


def train_tiny(data: Path, out: Path, seed: int = 1) -> Path:
    """Train ``tiny_run``'s model (another ``seed``: another model with the same vocabularies)."""
    run_cli(
        "train", "--data", data, "--out", out, "--embed", "32", "--hidden", "64", "--layers", "1",
        "--unidirectional", "--bridge", "last", "--schedule", "constant",
        "--attention", "luong", "--lr", "0.01", "--batch-tokens", "2000", "--max-steps", "60",
        "--valid-every", "60", "--seed", str(seed),
    )
    return out
