"""`mtkit export` and `mtkit info`: one file that translates, evaluates and serves exactly as its
run directory does, is refused when damaged or unsafe, and says what the model is."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import cli_error, run_cli
from mtkit.checkpoint import average_checkpoints, load_checkpoint, numbered_checkpoints
from mtkit.errors import CheckpointError, MtkitError, UsageError
from mtkit.export import describe, export_run
from mtkit.modelfile import ModelFile
from mtkit.rundir import open_model

LINES = ["w1 w2 w3", "w4 w5 w6 w7 w8", "", "w9 w10", "w11 w12 w13 w14 w15 w16"]


@pytest.fixture(scope="module")
def run(reverse_data, tmp_path_factory) -> Path:
    """A small run with numbered checkpoints (for --average)."""
    out = tmp_path_factory.mktemp("export") / "run"
    run_cli(
        "train", "--data", reverse_data, "--out", out, "--embed", "16", "--hidden", "32",
        "--attention", "luong", "--unidirectional", "--bridge", "last", "--lr", "0.01",
        "--max-steps", "30", "--valid-every", "10", "--seed", "3",
    )
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("file") / "model.mtkit"
    out = run_cli("export", run, "-o", path).stdout
    assert "best.pt" in out and str(path) in out
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def test_the_file_translates_and_evaluates_as_its_run_directory(run, exported, source, reverse_data):
    flags = ["--beam", "4", "--nbest", "3", "--format", "jsonl"]
    from_run = run_cli("translate", "--model", run, source, *flags).stdout
    assert run_cli("translate", "--model", exported, source, *flags).stdout == from_run
    scores = [json.loads(run_cli("evaluate", "--model", model, "--data", reverse_data, "--json").stdout) for model in (run, exported)]
    assert scores[0] == scores[1]


def test_the_file_holds_config_tokenisers_weights_and_summary(run, exported):
    model_file = ModelFile(exported)
    config = json.loads((run / "config.json").read_text())
    assert model_file.raw == {k: v for k, v in config.items() if k != "data_dir"}
    assert model_file.file("vocab.fr.txt") == (run / "vocab.fr.txt").read_bytes()
    best = load_checkpoint(run / "best.pt")["model"]
    assert all(torch.equal(model_file.content["model"][name], best[name]) for name in best)
    summary = model_file.summary()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert summary["best_dev"]["bleu"] == max(m["dev_bleu"] for m in metrics)
    assert summary["best_dev"]["loss"] == min(m["dev_loss"] for m in metrics)
    assert summary["data"] == json.loads((Path(config["data_dir"]) / "manifest.json").read_text())
    assert summary["training"]["step"] == 30
    assert summary["weights"] == {"checkpoint": "best.pt", "step": load_checkpoint(run / "best.pt")["progress"]["step"]}
    assert summary["trained_with"] == summary["exported_with"] == config["mtkit_version"]


def test_export_of_last_and_averaged_checkpoints(run, tmp_path):
    export_run(run, tmp_path / "last.mtkit", checkpoint="last")
    last = load_checkpoint(run / "last.pt")["model"]
    assert all(torch.equal(ModelFile(tmp_path / "last.mtkit").content["model"][n], t) for n, t in last.items())
    run_cli("export", run, "-o", tmp_path / "avg.mtkit", "--average", "2")
    averaged = ModelFile(tmp_path / "avg.mtkit")
    expected = average_checkpoints(numbered_checkpoints(run)[-2:])
    assert all(torch.equal(averaged.content["model"][n], t) for n, t in expected.items())
    assert averaged.summary()["weights"] == {"averaged": ["step-20.pt", "step-30.pt"]}
    assert "average of step-20.pt, step-30.pt" in run_cli("info", tmp_path / "avg.mtkit").stdout


def test_info_describes_run_directories_and_files(run, exported):
    from_run, from_file = describe(run), json.loads(run_cli("info", exported, "--json").stdout)
    assert from_file["kind"] == "model file" and from_run["kind"] == "run directory"
    for info in (from_run, from_file):
        assert (info["source_language"], info["target_language"]) == ("en", "fr")
        assert info["parameters"] == sum(t.numel() for t in load_checkpoint(run / "best.pt")["model"].values())
        assert info["model"]["attention"] == "luong" and info["model"]["hidden"] == 32
        assert info["training_data"]["splits"]["train"]["pairs"] == 30_000
        assert info["best_dev"] == ModelFile(exported).summary()["best_dev"]
        assert info["precision"]["weights"] == "float32"
    assert from_file["size_bytes"] == exported.stat().st_size
    assert from_file["mtkit_version"]["exported"] and from_run["mtkit_version"]["exported"] is None
    text = run_cli("info", exported).stdout
    assert "en → fr" in text and f"{from_file['parameters']:,}" in text and "train 30,000 pairs" in text
    assert f"BLEU {from_file['best_dev']['bleu']:.2f}" in text and "GRU encoder 1 × 32" in text


def test_serve_opens_model_files(exported, run):
    from mtkit.serve.client import ServerProcess

    with ServerProcess("--model", exported, "--model", f"dir={run}") as server:
        names = [m["name"] for m in server.call("/models").json()["models"]]
        assert names == ["model", "dir"]
        answers = [server.call("/translate", {"text": LINES, "model": name, "beam": 3}).json()["translations"] for name in names]
    assert answers[0] == answers[1] and any(answers[0])


# -- refused: each one line, no traceback ----------------------------------------------------


def damaged(exported: Path, tmp: Path, how: str) -> Path:
    data = bytearray(exported.read_bytes())
    target = tmp / f"{how}.mtkit"
    if how == "truncated":
        del data[len(data) // 2 :]
    elif how == "weights":  # a weight changed: the archive still reads
        content = torch.load(exported, weights_only=True)
        next(iter(content["model"].values())).view(-1)[0] += 1.0
        buffer = io.BytesIO()
        torch.save(content, buffer)
        data = bytearray(buffer.getvalue())
    elif how == "config":  # a setting changed in place: still a valid archive and pickle
        at = data.index(b"luong")
        data[at : at + 5] = b"bahda"[:5]
    target.write_bytes(bytes(data))
    return target


class Payload:
    """Pickles to a call of os.system: loading it with plain pickle would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "how, message",
    [
        ("truncated", "truncated or corrupted model file"),
        ("weights", "corrupted model file (checksum mismatch)"),
        ("config", "corrupted model file (checksum mismatch)"),
    ],
)
def test_damaged_files_are_refused(exported, tmp_path, source, how, message):
    path = damaged(exported, tmp_path, how)
    assert message in cli_error("translate", "--model", path, source, "-o", tmp_path / "out.txt")
    assert not (tmp_path / "out.txt").exists()


def test_a_file_that_would_run_code_is_refused(exported, tmp_path, source):
    content = torch.load(exported, weights_only=True)
    content["summary"]["data"] = Payload(tmp_path / "pwned")
    evil = tmp_path / "evil.mtkit"
    torch.save(content, evil)
    message = cli_error("translate", "--model", evil, source)
    assert "refused: the model file holds objects other than tensors and plain data" in message
    assert "posix.system" in message or "os.system" in message
    with pytest.raises(CheckpointError, match="refused"):
        ModelFile(evil)
    assert not (tmp_path / "pwned").exists()


def test_other_bad_uses(run, exported, tmp_path, source):
    assert "--checkpoint is for run directories" in cli_error("translate", "--model", exported, "--checkpoint", "last", source, status=2)
    torch.save({"model": {}}, tmp_path / "other.mtkit")
    with pytest.raises(CheckpointError, match="not an mtkit model file"):
        ModelFile(tmp_path / "other.mtkit")
    with pytest.raises(MtkitError, match="no such run directory or model file"):
        open_model(tmp_path / "nope.mtkit")
    with pytest.raises(MtkitError, match="already exists"):
        export_run(run, exported)
    with pytest.raises(UsageError, match="fewer than --average 9"):
        export_run(run, tmp_path / "a.mtkit", average=9)
    with pytest.raises(MtkitError, match="not a run directory"):
        export_run(tmp_path, tmp_path / "b.mtkit")
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "a.mtkit").exists()
