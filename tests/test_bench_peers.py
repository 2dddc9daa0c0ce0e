"""The peers benchmark (benchmarks/peers/): its configurations, measurements and table, fast; the
whole `make bench-peers QUICK=1` run as a slow test."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks" / "peers"))
sys.path.insert(0, str(REPO / "benchmarks"))

import book_d2l  # noqa: E402
import compare  # noqa: E402
import measure  # noqa: E402

from mtkit.config import load_recipe  # noqa: E402


def test_joey_config_is_the_issues_recurrent_model(tmp_path):
    config = compare.joey_config(tmp_path / "data", tmp_path / "joey", "en", "fr")
    assert json.loads(json.dumps(config)) == config  # written as JSON, which YAML reads
    encoder, decoder = config["model"]["encoder"], config["model"]["decoder"]
    assert (encoder["rnn_type"], encoder["bidirectional"], encoder["num_layers"], encoder["hidden_size"]) == ("gru", True, 2, 256)
    assert (decoder["rnn_type"], decoder["attention"], decoder["hidden_size"]) == ("gru", "bahdanau", 256)
    for side in ("src", "trg"):
        assert config["data"][side]["level"] == "word" and config["data"][side]["voc_min_freq"] == 2
    training = config["training"]
    assert (training["batch_size"], training["batch_type"], training["optimizer"]) == (128, "sentence", "adam")
    assert (training["learning_rate"], training["clip_grad_norm"]) == (0.005, 1.0)
    # joeynmt 2.3.0's plateau scheduler passes `verbose`, which current torch refuses: a constant rate.
    assert (training["scheduling"], training["decrease_factor"]) == ("exponential", 1.0)
    assert config["data"]["train"] == str(tmp_path / "data" / "train")
    decode = compare.joey_config(tmp_path / "data", tmp_path / "joey", "en", "fr", 5, 64, tmp_path / "joey" / "latest.ckpt")
    assert decode["testing"]["beam_size"] == 5 and decode["testing"]["load_model"].endswith("latest.ckpt")


def test_mtkit_at_joeys_size_matches_joeys_config(tmp_path):
    """The generated recipe is a valid mtkit recipe with Joey NMT's sizes, batch and optimiser."""
    path = tmp_path / "joey-size.toml"
    path.write_text(compare.toml_text(compare.joey_size_recipe(60, "bf16")))
    recipe = load_recipe(path)
    joey = compare.joey_config(tmp_path, tmp_path, "en", "fr")
    encoder, decoder, training = joey["model"]["encoder"], joey["model"]["decoder"], joey["training"]
    assert recipe.model.cell == encoder["rnn_type"] and recipe.model.attention == decoder["attention"]
    assert recipe.model.embed == encoder["embeddings"]["embedding_dim"] and recipe.model.hidden == encoder["hidden_size"]
    assert (recipe.model.layers, recipe.model.decoder_layers) == (encoder["num_layers"], decoder["num_layers"])
    assert recipe.model.bidirectional is True and recipe.model.bridge == "linear"
    assert recipe.data.tokenizer == "word" and recipe.data.min_freq == joey["data"]["src"]["voc_min_freq"]
    assert (recipe.train.batch_size, recipe.train.batch_tokens) == (training["batch_size"], None)
    assert (recipe.train.lr, recipe.train.clip_norm, recipe.train.schedule) == (0.005, 1.0, "constant")
    assert (recipe.train.max_time, recipe.train.precision) == (60, "bf16")


def test_book_size_and_best_recipe_settings():
    args = [str(a) for a in compare.book_size_args(90, "fp32")]
    recipe = Path(args[args.index("--recipe") + 1])
    assert recipe.is_file() and load_recipe(recipe).model.attention == "none"
    assert args[args.index("--batch-size") + 1] == "128" and args[args.index("--max-time") + 1] == "90s"
    assert compare.recipe_precision(REPO / "recipes" / "gru-attention.toml") == "bf16"
    assert compare.recipe_precision(REPO / "recipes" / "d2l.toml") == "fp32"


def _results() -> list[compare.Result]:
    return [
        compare.Result("joey", compare.NAMES["joey"], "joey cfg", 1000, 0.8, 2000, {1: 20.0, 5: 22.0}, {1: 100, 5: 20}),
        compare.Result("book", compare.NAMES["book"], "book cfg", 2000, 1.1, 1500, {1: 8.0}, {1: 300}),
        compare.Result("mtkit-joey", "mtkit", "joey size", 3500, 2.8, 1000, {1: 24.0, 5: 26.5}, {1: 900, 5: 160}),
        compare.Result("mtkit-book", "mtkit", "book size", 4000, 2.2, 900, {1: 9.0, 5: 10.0}, {1: 1200, 5: 200}),
        compare.Result("mtkit-best", "mtkit", "best", 6000, 2.0, 1400, {1: 45.0, 5: 48.0}, {1: 1500, 5: 250}),
    ]


def test_table_and_ratios():
    table = compare.table(_results())
    assert len(table) == 2 + 5 and table[0].startswith("| system | configuration | target tokens/s | epochs |")
    assert "| Joey NMT 2.3.0 | joey cfg | 1,000 | 0.80 | 20.0 | 22.0 | 100 | 20 | 2,000 MB |" in table
    assert "| 8.0 | – | 300 | – |" in table[3]  # the book's code: greedy only
    ratios = compare.ratios(_results())
    assert "| mtkit (at its size) ÷ Joey NMT 2.3.0 | 3.50× | +4.0 | +4.5 | 9.00× | 8.00× | 0.50× |" in ratios
    assert "| mtkit (at its size) ÷ the book's code (d2l 1.0.3) | 2.00× | +1.0 | – | 4.00× | – | 0.60× |" in ratios
    assert "| mtkit (best recipe) ÷ Joey NMT 2.3.0 | 6.00× | +25.0 | +26.0 | 15.00× | 12.50× | 0.70× |" in ratios
    assert ratios[-1] == "best test BLEU: mtkit 48.0, best peer (Joey NMT 2.3.0) 22.0: +26.0"
    # Without a peer there is nothing to divide by.
    assert compare.ratios([r for r in _results() if r.key.startswith("mtkit")]) == []


def test_training_statistics():
    log = "\n".join([
        "2026-11-26 11:57:24 - INFO - Epoch   1, Step:       10, Batch Loss:  5.1, Batch Acc: 0.1, Tokens per Sec:      600, Lr: 0.005",
        "2026-11-26 11:57:34 - INFO - Epoch   1, Step:       20, Batch Loss:  4.9, Batch Acc: 0.1, Tokens per Sec:      800, Lr: 0.005",
        "2026-11-26 11:57:40 - INFO - Interrupt at epoch 1, step 27.",
    ])
    assert compare.joey_training_stats(log) == (700, 27)
    assert compare.parameters_from_log("training: 8,254,528 parameters, 162,762 pairs") == 8_254_528
    assert compare.parameters_from_log("INFO - joeynmt.model - Total params: 14471424") == 14_471_424
    # Two validation windows: 1,000 tokens at 100/s and 3,000 at 300/s → 4,000 tokens in 20 s.
    metrics = [{"target_tokens": 1000, "tokens_per_second": 100.0}, {"target_tokens": 4000, "tokens_per_second": 300.0}]
    assert measure.training_throughput(metrics) == 200


def test_run_measured_memory_timeout_and_interrupt(tmp_path):
    seconds, peak = measure.run_measured([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert peak > 300 and seconds > 0
    with pytest.raises(subprocess.TimeoutExpired):
        measure.run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout=1)
    with pytest.raises(RuntimeError, match="failed"):
        measure.run_measured([sys.executable, "-c", "raise SystemExit(3)"])
    # A process stopped by SIGINT once its budget is spent (as Joey NMT is) is no failure.
    script, ready = tmp_path / "waits.py", tmp_path / "ready"
    script.write_text(f"import pathlib, time\ntry:\n    pathlib.Path({str(ready)!r}).touch()\n    time.sleep(30)\n"
                      "except KeyboardInterrupt:\n    print('saved')\n")

    def stop_when_ready(process):
        if ready.exists():
            process.send_signal(signal.SIGINT)

    measure.run_measured([sys.executable, script], stdout=tmp_path / "out.txt", until=stop_when_ready)
    assert (tmp_path / "out.txt").read_text() == "saved\n"
    # Started in the background (`make bench-peers &`), the benchmark inherits SIGINT ignored;
    # the child must still get it.
    ready.unlink()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seconds, _ = measure.run_measured([sys.executable, script], stdout=tmp_path / "out.txt", until=stop_when_ready)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (tmp_path / "out.txt").read_text() == "saved\n" and seconds < 20


def test_decode_speed_checks_one_line_per_input(tmp_path):
    sources = tmp_path / "test.en"
    sources.write_text("a b\nc d\ne f\n")
    hyp, speed = measure.decode_speed(["cat"], sources, tmp_path, "copy")
    assert hyp.read_text() == sources.read_text() and speed > 0
    with pytest.raises(RuntimeError, match="1 output lines for 3 sources"):
        measure.decode_speed(["head", "-n", "1"], sources, tmp_path, "short")


def test_book_output_detokenised_as_french():
    assert book_d2l.detokenize(["je", "suis", "là", "."]) == "je suis là."
    assert book_d2l.detokenize(["va", "!"]) == "va !"
    assert book_d2l.detokenize(["oui", ",", "c'est", "ça", "?"]) == "oui, c'est ça ?"


def test_word_level_data_directory_keeps_the_split(reverse_data, tmp_path):
    """mtkit's word-level data directories for the peers' sizes are made from the split's own
    files, every reference included."""
    out = compare.derived_data(reverse_data, tmp_path / "word", ["--tokenizer", "word", "--min-freq", "2"], tmp_path / "log")
    for split in ("dev", "test"):
        assert (out / f"{split}.en").read_text() == (reverse_data / f"{split}.en").read_text()
        assert (out / f"{split}.refs.jsonl").read_text() == (reverse_data / f"{split}.refs.jsonl").read_text()
    assert (out / "train.en").read_text() == (reverse_data / "train.en").read_text()


@pytest.mark.slow
def test_compare_mtkit_rows_on_a_small_split(reverse_data, tmp_path):
    """The mtkit side of the benchmark end to end on synthetic data, without the peers."""
    done = subprocess.run([sys.executable, REPO / "benchmarks" / "peers" / "compare.py", "--data-dir", reverse_data,
                           "--systems", "mtkit-joey", "--budget", "3", "--work", tmp_path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| mtkit |")]
    assert len(rows) == 1 and "Joey NMT's size" in rows[0]


@pytest.mark.slow
def test_make_bench_peers_quick(fra_eng_zip, tmp_path):
    """`make bench-peers QUICK=1`: every system for one minute, or a printed reason to skip."""
    done = subprocess.run(["make", "-s", "bench-peers", "QUICK=1", f"DATA={fra_eng_zip}", f"BENCH={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if "peers benchmark skipped" in done.stdout:
        pytest.skip(done.stdout.strip().splitlines()[0])
    lines = done.stdout.splitlines()
    rows = [line for line in lines if line.startswith(("| Joey NMT", "| the book's code", "| mtkit |"))]
    assert len(rows) == 5, done.stdout
    assert any(line.startswith("| mtkit (at its size) ÷ Joey NMT") for line in lines)
    assert any(line.startswith("best test BLEU: mtkit") for line in lines)
