"""The GPU check (benchmarks/gpu_check.sh): its stage runner, GPU sampling and summary, fast; the
whole script in its CPU dry-run mode as a slow test, so the one real GPU run works first time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


def test_stages_are_time_boxed_and_failures_do_not_stop_the_check(tmp_path):
    check = gpu_check.Check(tmp_path, deadline=time.time() + 100)

    def fails(seconds):
        raise RuntimeError("mtkit train exited with 1: mtkit: error: fp16 needs a CUDA device\nmore")

    def times_out(seconds):
        raise subprocess.TimeoutExpired("mtkit", seconds)

    limits = []
    check.stage("broken", 30, 0, fails)
    check.stage("slow", 30, 0, times_out)
    check.stage("squeezed", 30, 90, lambda seconds: limits.append(seconds) or {"value": 1})
    check.stage("no-time", 30, 99, lambda seconds: {"value": 2})
    stages = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert stages["broken"]["status"] == "failed: mtkit train exited with 1: mtkit: error: fp16 needs a CUDA device"
    assert stages["slow"]["status"] == "timed out after 30 s"
    assert stages["squeezed"]["status"] == "ok" and stages["squeezed"]["value"] == 1 and 5 <= limits[0] <= 10
    assert stages["no-time"]["status"] == "skipped: no time left" and "value" not in stages["no-time"]


def test_gpu_usage_counts_only_the_training_window(tmp_path):
    samples = tmp_path / "smi.csv"
    samples.write_text("2026/11/26 12:00:00.000, 0, 500\n2026/11/26 12:00:05.500, 80, 9000\n"
                       "2026/11/26 12:00:06.000, 90, 9500\nnot a sample\n2026/11/26 12:00:09.000, 0, 600\n")
    log = tmp_path / "train.log"
    log.write_text("2026-11-26 12:00:05 training: 8,254,528 parameters\n2026-11-26 12:00:07 validation step 250\n")
    usage = gpu_check.gpu_usage(samples, log)
    assert usage == {"gpu_samples": 2, "gpu_utilization_mean": 85.0, "gpu_memory_peak_mib": 9500.0}


def test_batch_waits_are_read_from_trainings_validation_lines(tmp_path):
    from rich.console import Console

    from mtkit.training.loop import Validation
    from mtkit.training.progress import Reporter

    with Reporter(Console(quiet=True), tmp_path / "train.log") as reporter:
        for step, waited in ((100, 0.0123), (200, 0.0)):
            result = Validation(step, 1, 10.0, 5000, 3.2, 3.0, 12.5, 40.1, 0.003, 2500.0, 0.01)
            reporter.log_validation(result, improved=True, waited=waited)
    assert gpu_check.batch_waits(tmp_path / "train.log") == [0.012, 0.0]


def test_summary_reads_every_stage():
    summary = {"date": "2026-11-26T12:00:00", "dry_run": False, "stages": {
        "environment": {"status": "ok", "seconds": 3, "gpu": "NVIDIA H100 80GB HBM3", "torch": "2.5.1", "cuda": "12.4", "mtkit": "mtkit 0.1.0"},
        "cuda-tests": {"status": "ok", "seconds": 40, "pytest": "4 passed in 35.2s"},
        "precision-fp16": {"status": "ok", "seconds": 20, "step_train_dev_loss": [[20, 6.1, 5.2], [40, 4.9, 4.4]],
                           "tokens_per_second": 210000, "learning": True},
        "best-recipe": {"status": "ok", "seconds": 140, "batch_tokens": 24000, "train_seconds": 120, "updates": 900,
                        "tokens_per_second": 180000, "tokens_per_second_overall": 170000,
                        "dev_bleu": [[250, 30.1], [900, 38.55]], "gpu_samples": 260,
                        "gpu_utilization_mean": 71.3, "gpu_memory_peak_mib": 10240, "waited_for_batches_max": 0.002},
        "decode-beam1": {"status": "ok", "seconds": 15, "sentences_per_second": 9000, "test_bleu": 37.2},
        "decode-beam5": {"status": "timed out after 60 s", "seconds": 60},
    }}
    text = "\n".join(gpu_check.summary_lines(summary))
    assert "NVIDIA H100 80GB HBM3; torch 2.5.1 (CUDA 12.4)" in text
    assert "cuda-tests       ok (40 s): 4 passed in 35.2s" in text
    assert "fp16: step 20: train 6.1, dev 5.2, step 40: train 4.9, dev 4.4; 210,000 target tokens/s; dev loss falls" in text
    assert "180,000 target tokens/s (validations excluded; 170,000 overall; target on one H100: 150,000), " \
           "900 updates, dev BLEU 38.5" in text
    assert "GPU memory 10.0 GiB (nvidia-smi peak), utilisation 71% (mean of 260 samples)" in text
    assert "waited for batches at most 0.2% of the time between validations" in text
    assert "greedy: 9,000 sentences/s on the test split, test BLEU 37.2" in text
    assert "decode-beam5     timed out after 60 s" in text and "beam 5:" not in text


def test_gpu_check_needs_a_corpus(tmp_path):
    done = subprocess.run(["bash", REPO / "benchmarks" / "gpu_check.sh", tmp_path / "missing.zip"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "usage:" in done.stderr


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(fra_eng_zip, tmp_path):
    """Every stage of the script end to end on the CPU with tiny settings; fp16 (CUDA only) must
    fail there without stopping the stages after it."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", REPO / "benchmarks" / "gpu_check.sh", fra_eng_zip, "--dry-run"],
                          env={**os.environ, "PYTHON": sys.executable, "OUT": str(out)},
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    stages = json.loads((out / "summary.json").read_text())["stages"]
    for name in ("environment", "cuda-tests", "preprocess", "precision-fp32", "precision-bf16", "best-recipe",
                 "decode-beam1", "decode-beam5"):
        assert stages[name]["status"] == "ok", (name, stages[name])
    assert stages["precision-fp16"]["status"].startswith("failed: mtkit train exited with")
    assert stages["best-recipe"]["tokens_per_second"] > 0 and stages["best-recipe"]["dev_bleu"]
    assert stages["decode-beam5"]["sentences_per_second"] > 0 and stages["decode-beam5"]["test_bleu"] >= 0
    assert "best recipe, bf16" in done.stdout and (out / "summary.txt").read_text() in done.stdout
