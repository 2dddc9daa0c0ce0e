"""Fine-tuning through the CLI: `mtkit preprocess --tokenizers-from RUN_DIR` encodes new data with
a run's vocabularies, `mtkit train --init RUN_DIR` starts from its weights with its model
settings (an exported `.mtkit` file serving for RUN_DIR in both), and every combination that
cannot work is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_error, run_cli
from synthetic import make_task, write_tsv
from mtkit.checkpoint import load_checkpoint, save_checkpoint
from mtkit.fileio import file_digest
from mtkit.modelfile import ModelFile


@pytest.fixture(scope="module")
def copy_corpus(tmp_path_factory) -> Path:
    """The new domain: copying instead of reversing, over the same words."""
    return write_tsv(tmp_path_factory.mktemp("copy") / "copy.tsv", make_task("copy", 1200, seed=7))


@pytest.fixture(scope="module")
def copy_data(tiny_run, copy_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("copy-data") / "data"
    run_cli("preprocess", copy_corpus, "--tokenizers-from", tiny_run, "--dev-size", "50", "--test-size", "50", "--out", out)
    return out


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    """``tiny_run`` in one file (its best checkpoint)."""
    path = tmp_path_factory.mktemp("exported") / "model.mtkit"
    run_cli("export", tiny_run, "-o", path)
    return path


def fine_tune(parent: Path, data: Path, out: Path, *extra: str, check: bool = True):
    return run_cli("train", "--init", parent, "--data", data, "--out", out, "--max-steps", "1", *extra, check=check)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def encoded_with_tokenizers_of(data: Path, run: Path, origin: Path) -> dict:
    """Check that ``data``, made with ``--tokenizers-from origin``, holds ``run``'s tokeniser
    files byte for byte; return its manifest."""
    config = json.loads((run / "config.json").read_text())
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["tokenizers_from"] == str(origin.resolve())
    assert manifest["tokenizers"] == config["tokenizers"]
    for info in config["tokenizers"].values():
        assert (data / info["file"]).read_bytes() == (run / info["file"]).read_bytes()
    return manifest


def test_tokenizers_from_encodes_with_the_runs_vocabularies(tiny_run, copy_data):
    manifest = encoded_with_tokenizers_of(copy_data, tiny_run, tiny_run)
    # the run's vocabulary settings, although none was given (mtkit's defaults differ)
    assert manifest["options"]["tokenizer"] == "word" and manifest["options"]["min_freq"] == 1


@pytest.mark.parametrize("choice", ["best", "last", "file"])
def test_fine_tuning_starts_from_the_chosen_checkpoint_of_the_parent(choice, tiny_run, copy_data, tmp_path):
    if choice == "file":  # a checkpoint unlike any of the run's: its weights shifted by one
        source = tmp_path / "shifted.pt"
        save_checkpoint(source, {"model": {k: v + 1 for k, v in weights(tiny_run / "best.pt").items()}})
        option = str(source)
    else:
        source, option = tiny_run / f"{choice}.pt", choice
    # With a learning rate of 0 the one update changes nothing: the run ends with its first weights.
    fine_tune(tiny_run, copy_data, tmp_path / "ft", "--init-checkpoint", option, "--lr", "0")
    started, parent = weights(tmp_path / "ft" / "last.pt"), weights(source)
    assert started.keys() == parent.keys()
    assert all(torch.equal(started[k], parent[k]) for k in parent)
    recorded = json.loads((tmp_path / "ft" / "config.json").read_text())["parent"]
    assert recorded["run_dir"] == str(tiny_run.resolve()) and recorded["checkpoint"] == str(source.resolve())


def test_fine_tuning_learns_the_new_data_and_records_its_parent(tiny_run, copy_data, tmp_path):
    result = fine_tune(tiny_run, copy_data, tmp_path / "ft", "--max-steps", "6", "--valid-every", "3", "--lr", "0.003")
    assert "with a fresh optimiser and schedule" in result.stderr
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    parent = json.loads((tiny_run / "config.json").read_text())
    assert config["model"] == parent["model"]  # its model settings, not mtkit's defaults
    assert config["data_dir"] == str(copy_data.resolve())
    best = load_checkpoint(tiny_run / "best.pt")
    assert config["parent"]["step"] == best["progress"]["step"]
    assert len(config["parent"]["sha256"]) == 64
    # a fresh schedule and optimiser: the step count starts again at 0
    metrics = [json.loads(line) for line in (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [3, 6]
    # the lineage survives a resume and a fine-tuning of the fine-tuned run
    run_cli("train", "--resume", tmp_path / "ft", "--max-steps", "7")
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["parent"] == config["parent"]
    fine_tune(tmp_path / "ft", copy_data, tmp_path / "ft2")
    assert json.loads((tmp_path / "ft2" / "config.json").read_text())["parent"]["parent"] == config["parent"]


def test_changed_model_settings_are_refused_naming_each(tiny_run, copy_data, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("[model]\ncell = 'lstm'\nattention = 'luong'\n")  # attention is the run's
    result = fine_tune(tiny_run, copy_data, tmp_path / "ft", "--recipe", recipe, "--hidden", "32",
                       "--embed", "32", "--model.dropout", "0.5", check=False)
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.count("\n") == 0 and error.startswith("mtkit: error: --init")
    for named in ("--hidden 32 (", "--cell lstm (", "--dropout 0.5 ("):
        assert named in error
    assert "--embed" not in error and "--attention" not in error  # the same values as the run's
    assert not (tmp_path / "ft").exists()


def test_data_with_other_tokenizers_is_refused_naming_both(tiny_run, exported, copy_corpus, tmp_path):
    other = tmp_path / "other"
    run_cli("preprocess", copy_corpus, "--tokenizer", "word", "--min-freq", "1", "--dev-size", "50",
            "--test-size", "50", "--out", other)
    result = fine_tune(tiny_run, other, tmp_path / "ft", check=False)
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.count("\n") == 0
    assert str(other) in error and str(tiny_run) in error
    assert f"{other / 'vocab.en.txt'}" in error and f"{tiny_run / 'vocab.en.txt'}" in error
    assert "--tokenizers-from" in error
    assert not (tmp_path / "ft").exists()
    error = cli_error("train", "--init", exported, "--data", other, "--out", tmp_path / "ft", status=2)
    assert f"{other / 'vocab.en.txt'}" in error and f"{exported}:vocab.en.txt" in error
    assert not (tmp_path / "ft").exists()


def test_tokenizers_from_refuses_settings_that_would_change_the_vocabulary(tiny_run, copy_corpus, tmp_path):
    result = run_cli("preprocess", copy_corpus, "--tokenizers-from", tiny_run, "--tokenizer", "sentencepiece",
                     "--min-freq", "3", "--data.normalize", "book", "--out", tmp_path / "d", check=False)
    assert result.returncode == 2
    error = result.stderr.strip()
    assert error.count("\n") == 0
    for named in ("--tokenizer sentencepiece (", "--min-freq 3 (", "--normalize book ("):
        assert named in error
    assert not (tmp_path / "d").exists()
    # the run's own values are no change
    run_cli("preprocess", copy_corpus, "--tokenizers-from", tiny_run, "--tokenizer", "word", "--min-freq", "1",
            "--dev-size", "50", "--test-size", "50", "--out", tmp_path / "d")


def test_fine_tuning_usage_errors(tiny_run, copy_data, tmp_path):
    for args, message in [
        (("train", "--data", copy_data, "--out", tmp_path / "ft", "--init-checkpoint", "last"), "--init-checkpoint needs --init"),
        (("train", "--resume", tiny_run, "--init", tiny_run), "--resume continues RUN_DIR"),
        (("train", "--init", copy_data, "--data", copy_data, "--out", tmp_path / "ft"), "not a run directory"),
        (("train", "--init", tiny_run, "--init-checkpoint", tmp_path / "none.pt", "--data", copy_data,
          "--out", tmp_path / "ft"), "checkpoint not found"),
    ]:
        result = run_cli(*args, check=False)
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "ft").exists()


def test_tokenizers_from_a_model_file_encode_as_its_run_and_fine_tune_the_run(tiny_run, exported, copy_corpus, copy_data, tmp_path):
    new = tmp_path / "new"
    run_cli("preprocess", copy_corpus, "--tokenizers-from", exported, "--dev-size", "50", "--test-size", "50", "--out", new)
    manifest = encoded_with_tokenizers_of(new, tiny_run, exported)
    for split in ("train", "dev", "test"):  # the same ids as the data made with --tokenizers-from RUN_DIR
        assert json.loads((copy_data / "manifest.json").read_text())["splits"][split] == manifest["splits"][split]
        for side in ("src", "tgt"):
            assert (new / f"{split}.{side}.ids").read_bytes() == (copy_data / f"{split}.{side}.ids").read_bytes()
    fine_tune(tiny_run, new, tmp_path / "ft")  # the run accepts data encoded with its exported file
    assert (tmp_path / "ft" / "last.pt").is_file()


def test_fine_tuning_from_a_model_file_starts_from_its_weights(tiny_run, exported, copy_data, tmp_path):
    # data encoded with the run's tokenisers, fine-tuned from the run's exported file
    fine_tune(exported, copy_data, tmp_path / "ft", "--lr", "0")
    started, parent = weights(tmp_path / "ft" / "last.pt"), ModelFile(exported).content["model"]
    assert started.keys() == parent.keys()
    assert all(torch.equal(started[k], parent[k]) for k in parent)
    config = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert config["model"] == json.loads((tiny_run / "config.json").read_text())["model"]
    assert config["parent"] == {
        "model_file": str(exported.resolve()),
        "sha256": file_digest(exported),
        "step": load_checkpoint(tiny_run / "best.pt")["progress"]["step"],
    }


def test_a_model_file_refuses_init_checkpoint_and_changed_model_settings(exported, copy_data, tmp_path):
    error = cli_error("train", "--init", exported, "--init-checkpoint", "last", "--data", copy_data,
                      "--out", tmp_path / "ft", status=2)
    assert "--init-checkpoint" in error and str(exported) in error and "one set of weights" in error
    error = cli_error("train", "--init", exported, "--hidden", "32", "--data", copy_data, "--out", tmp_path / "ft", status=2)
    assert error.startswith("--init") and "--hidden 32 (" in error
    assert not (tmp_path / "ft").exists()


def test_a_sentencepiece_run_fine_tunes_on_data_encoded_with_its_models(reverse_task, copy_corpus, tmp_path):
    data, run, new = tmp_path / "data", tmp_path / "run", tmp_path / "new"
    run_cli("preprocess", "--train", reverse_task["train"], "--dev", reverse_task["dev"], "--tokenizer",
            "sentencepiece", "--vocab-size", "300", "--max-examples", "3000", "--out", data)
    run_cli("train", "--data", data, "--out", run, "--embed", "16", "--hidden", "16", "--max-steps", "1")
    run_cli("preprocess", copy_corpus, "--tokenizers-from", run, "--dev-size", "50", "--test-size", "50", "--out", new)
    for name in ("spm.en.model", "spm.fr.model", "vocab.en.txt", "vocab.fr.txt"):
        assert (new / name).read_bytes() == (run / name).read_bytes()
    manifest = json.loads((new / "manifest.json").read_text())
    assert manifest["options"]["vocab_size"] == 300 and manifest["tokenizer_sentences"] is None
    fine_tune(run, new, tmp_path / "ft")
    assert (tmp_path / "ft" / "best.pt").is_file()
