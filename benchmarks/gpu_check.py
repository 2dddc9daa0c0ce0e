"""The GPU check's stages; run by gpu_check.sh once mtkit is importable (see there).

    python benchmarks/gpu_check.py CORPUS --out DIR [--work DIR] [--dry-run] [--batch-tokens N] [--train-seconds S]

Each stage runs under its own time limit, cut further so that the whole check ends within
``--budget`` seconds of GPU_CHECK_START (the shell script's start) with time kept for the stages
that matter most (the 2-minute training and decoding). A stage that fails or runs out of time is
recorded and the next one runs. summary.json is rewritten after every stage, so a check killed
from outside still leaves its results; summary.txt and the printout are the compact form. Logs,
translations and summaries go to ``--out``; the data directory and run directories (checkpoints)
to ``--work``.

``--dry-run`` runs the same stages on the CPU with tiny settings (a 6,000-pair corpus slice,
steps instead of minutes; fp16, CUDA-only, fails there as it should): it checks the script
end to end on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from measure import decode_speed, mtkit, mtkit_command, read_metrics, score_bleu, training_throughput  # noqa: E402

RECIPE = REPO / "recipes" / "gru-attention.toml"
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class Settings:
    device: str
    preprocess: list[str]  # extra `mtkit preprocess` options
    precision_steps: int  # updates of each short precision run (validated twice)
    slack: float  # stage time limits are multiplied by this
    train_seconds: float  # the best recipe's budget
    batch_tokens: int
    valid_every: int
    greedy_batch: int
    beam_batch: int


def settings(dry_run: bool, batch_tokens: int | None, train_seconds: float | None) -> Settings:
    if dry_run:
        # A busy 2-core machine may be ten times slower than a GPU's host: generous limits.
        base = Settings("cpu", ["--max-examples", "6000", "--dev-size", "100", "--test-size", "200",
                                "--vocab-size", "1000"], 4, 4.0, 8, 2000, 20, 512, 102)
    else:
        # GPU-sized batches: about 2,400 sentences of 10 tokens. The recurrence (and the Bahdanau
        # decoder's loop over target positions) costs a fixed number of kernel launches per
        # position whatever the batch, so only large batches keep the GPU busy.
        base = Settings("cuda", [], 40, 1.0, 120, 24_000, 500, 2000, 400)
    if batch_tokens:
        base.batch_tokens = batch_tokens
    if train_seconds:
        base.train_seconds = train_seconds
    return base


class Check:
    """Runs stages under time limits and keeps the summary."""

    def __init__(self, out: Path, deadline: float) -> None:
        self.out, self.deadline = out, deadline
        self.summary: dict = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "stages": {}}

    def stage(self, name: str, limit: float, reserve: float, action) -> dict | None:
        """Run ``action(seconds)`` within ``limit`` seconds, less whatever would eat into the
        ``reserve`` kept for later stages; record how it went."""
        seconds = min(limit, self.deadline - time.time() - reserve)
        record: dict = {"limit_s": round(max(seconds, 0))}
        self.summary["stages"][name] = record
        if seconds < 5:
            record["status"] = "skipped: no time left"
            self.save()
            return None
        started = time.time()
        result = None
        try:
            result = action(seconds)
            record["status"] = "ok"
        except subprocess.TimeoutExpired:
            record["status"] = f"timed out after {seconds:.0f} s"
        except Exception as error:  # recorded; the next stage runs regardless
            record["status"] = f"failed: {error}".splitlines()[0][:300]
        record["seconds"] = round(time.time() - started, 1)
        if result:
            record.update(result)
        self.save()
        print(f"[{time.time() - float(os.environ.get('GPU_CHECK_START', started)):5.0f}s] {name}: {record['status']}",
              flush=True)
        return result

    def save(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary, indent=1))


# -- stages -----------------------------------------------------------------------------------


def environment(timeout: float) -> dict:
    probe = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
             "'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) if c else None, "
             "'bf16': bool(c and torch.cuda.is_bf16_supported()), 'threads': torch.get_num_threads()}))")
    info = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                                     timeout=timeout).stdout)
    info["python"] = sys.version.split()[0]
    info["mtkit"] = subprocess.run(mtkit_command("--version"), capture_output=True, text=True, timeout=timeout).stdout.strip()
    if shutil.which("nvidia-smi"):
        info["nvidia_smi"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=timeout).stdout.strip()
    return info


def cuda_tests(out: Path, timeout: float) -> dict:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cuda.py"],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    (out / "test_cuda.log").write_text(done.stdout + done.stderr)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    if done.returncode != 0:
        raise RuntimeError(f"pytest: {last}")
    return {"pytest": last}


def short_training(data: Path, work: Path, out: Path, s: Settings, precision: str, timeout: float) -> dict:
    """A few updates with GPU-sized batches: losses at two validations, and the speed."""
    run = work / f"precision-{precision}"
    mtkit("train", "--recipe", RECIPE, "--data", data, "--out", run, "--force", "--device", s.device,
          "--precision", precision, "--batch-tokens", s.batch_tokens, "--max-steps", s.precision_steps,
          "--valid-every", s.precision_steps // 2, log=out / f"precision-{precision}.log", timeout=timeout)
    metrics = read_metrics(run)
    losses = [(m["step"], round(m["train_loss"], 3), round(m["dev_loss"], 3)) for m in metrics]
    finite = all(math.isfinite(v) for _, train, dev in losses for v in (train, dev))
    return {"step_train_dev_loss": losses, "tokens_per_second": round(training_throughput(metrics)),
            "learning": bool(finite and losses[-1][2] < losses[0][2])}


def best_recipe(data: Path, work: Path, out: Path, s: Settings, timeout: float) -> dict:
    """The best recipe in bf16 for the budget, GPU utilisation and memory sampled meanwhile."""
    run = work / "best"
    sampler = start_sampler(out / "nvidia-smi.csv")
    try:
        mtkit("train", "--recipe", RECIPE, "--data", data, "--out", run, "--force", "--device", s.device,
              "--precision", "bf16", "--batch-tokens", s.batch_tokens, "--max-time", f"{s.train_seconds:g}s",
              "--valid-every", s.valid_every, log=out / "best.log", timeout=timeout)
    finally:
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
    metrics = read_metrics(run)
    last = metrics[-1]
    result = {
        "batch_tokens": s.batch_tokens, "train_seconds": s.train_seconds, "updates": last["step"],
        "epochs_completed": last["epoch"],
        "tokens_per_second": round(training_throughput(metrics)),  # validations excluded
        "tokens_per_second_overall": round(last["target_tokens"] / last["elapsed"]),
        "dev_bleu": [(m["step"], round(m["dev_bleu"], 2)) for m in metrics],
    }
    waited = batch_waits(run / "train.log")
    if waited:
        result["waited_for_batches_max"] = max(waited)
    if sampler is not None:
        result.update(gpu_usage(out / "nvidia-smi.csv", run / "train.log"))
    return result


def batch_waits(train_log: Path) -> list[float]:
    """The share of training time spent waiting for the prefetching thread's batches, from
    each validation line of train.log (one figure per interval between validations)."""
    found = re.findall(r"waited for batches (\d+(?:\.\d+)?)%", train_log.read_text()) if train_log.exists() else []
    return [float(share) / 100 for share in found]


def decoding(data: Path, work: Path, out: Path, s: Settings, beam: int, timeout: float) -> dict:
    command = mtkit_command("translate", "--model", work / "best", "--device", s.device, "--precision", "bf16",
                            "--beam", beam, "--batch-size", s.greedy_batch if beam == 1 else s.beam_batch)
    deadline = time.time() + timeout
    hyp, speed = decode_speed(command, data / "test.en", out, f"decode-beam{beam}", timeout=timeout - 10)
    return {"sentences_per_second": round(speed),
            "test_bleu": round(score_bleu(hyp, data), 2) if time.time() < deadline else None}


# -- GPU sampling -----------------------------------------------------------------------------


def start_sampler(path: Path) -> subprocess.Popen | None:
    if not shutil.which("nvidia-smi"):
        return None
    with open(path, "wb") as sink:
        return subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,utilization.gpu,memory.used",
                                 "--format=csv,noheader,nounits", "-lms", "500"], stdout=sink, stderr=subprocess.DEVNULL)


def gpu_usage(samples: Path, train_log: Path) -> dict:
    """Mean utilisation and peak memory over the samples taken while the training loop ran
    (between train.log's first and last lines; all samples where those cannot be read)."""
    rows = []
    for line in samples.read_text().splitlines():
        try:
            stamp, util, memory = (part.strip() for part in line.split(","))
            rows.append((datetime.datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f"), float(util), float(memory)))
        except ValueError:
            continue
    window = rows
    try:
        lines = train_log.read_text().splitlines()
        first, last = (datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S") for line in (lines[0], lines[-1]))
        window = [r for r in rows if first <= r[0] <= last + datetime.timedelta(seconds=1)] or rows
    except (ValueError, IndexError, OSError):
        pass
    if not window:
        return {"gpu_samples": 0}
    return {"gpu_samples": len(window), "gpu_utilization_mean": round(sum(r[1] for r in window) / len(window), 1),
            "gpu_memory_peak_mib": max(r[2] for r in rows)}


# -- summary ----------------------------------------------------------------------------------


def summary_lines(summary: dict) -> list[str]:
    stages, env = summary["stages"], summary["stages"].get("environment", {})
    lines = [f"GPU check {summary['date']}: {env.get('gpu') or 'no GPU'}; torch {env.get('torch', '?')} "
             f"(CUDA {env.get('cuda')}); {env.get('mtkit', 'mtkit ?')}{'; DRY RUN on CPU' if summary.get('dry_run') else ''}"]
    for name, record in stages.items():
        detail = f": {record['pytest']}" if "pytest" in record else ""
        lines.append(f"  {name:<16} {record['status']} ({record.get('seconds', 0):.0f} s){detail}")
    for precision in PRECISIONS:
        r = stages.get(f"precision-{precision}", {})
        if "step_train_dev_loss" in r:
            points = ", ".join(f"step {step}: train {train}, dev {dev}" for step, train, dev in r["step_train_dev_loss"])
            lines.append(f"{precision}: {points}; {r['tokens_per_second']:,} target tokens/s; "
                         f"{'dev loss falls' if r['learning'] else 'NOT LEARNING'}")
    best = stages.get("best-recipe", {})
    if "tokens_per_second" in best:
        bleu = max((b for _, b in best["dev_bleu"]), default=float("nan"))
        gpu = (f"; GPU memory {best['gpu_memory_peak_mib'] / 1024:.1f} GiB (nvidia-smi peak), utilisation "
               f"{best['gpu_utilization_mean']:.0f}% (mean of {best['gpu_samples']} samples)"
               if "gpu_utilization_mean" in best else "; GPU not sampled")
        if "waited_for_batches_max" in best:
            gpu += f"; waited for batches at most {best['waited_for_batches_max']:.1%} of the time between validations"
        lines.append(f"best recipe, bf16, {best['train_seconds']:g} s, batches of {best['batch_tokens']:,} tokens: "
                     f"{best['tokens_per_second']:,} target tokens/s (validations excluded; "
                     f"{best['tokens_per_second_overall']:,} overall; target on one H100: 150,000), "
                     f"{best['updates']:,} updates, dev BLEU {bleu:.1f}{gpu}")
    for beam in (1, 5):
        r = stages.get(f"decode-beam{beam}", {})
        if "sentences_per_second" in r:
            lines.append(f"{'greedy' if beam == 1 else 'beam 5'}: {r['sentences_per_second']:,} sentences/s "
                         f"on the test split, test BLEU {r['test_bleu']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", help="fra-eng.zip (or any corpus `mtkit preprocess` reads)")
    parser.add_argument("--out", type=Path, required=True, help="summary, logs and translations")
    parser.add_argument("--work", type=Path, default=None, help="data and run directories [OUT]")
    parser.add_argument("--dry-run", action="store_true", help="the same stages on the CPU, tiny")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the whole check [470; dry run 1800]")
    parser.add_argument("--batch-tokens", type=int, default=None, help="target tokens per batch [24000]")
    parser.add_argument("--train-seconds", type=float, default=None, help="the best recipe's budget [120]")
    args = parser.parse_args()
    out = args.out.resolve()
    work = (args.work or args.out).resolve()
    for directory in (out, work):
        directory.mkdir(parents=True, exist_ok=True)
    s = settings(args.dry_run, args.batch_tokens, args.train_seconds)
    budget = args.budget or (1800 if args.dry_run else 470)
    check = Check(out, float(os.environ.get("GPU_CHECK_START", time.time())) + budget)
    check.summary["dry_run"] = args.dry_run
    data = work / "data"
    best_limit = s.train_seconds + 50 * s.slack  # start-up, the last validation, checkpoints
    decode_limit = 60 * s.slack
    protected = best_limit + 2 * decode_limit

    check.stage("environment", 30 * s.slack, protected, environment)
    check.stage("cuda-tests", 90 * s.slack, protected, lambda t: cuda_tests(out, t))
    check.stage("preprocess", 120 * s.slack, protected, lambda t: mtkit(
        "preprocess", Path(args.corpus).resolve(), "--recipe", RECIPE, "--out", data, "--force", *s.preprocess,
        log=out / "preprocess.log", timeout=t))
    for precision in PRECISIONS:
        check.stage(f"precision-{precision}", 45 * s.slack, protected,
                    lambda t, p=precision: short_training(data, work, out, s, p, t))
    check.stage("best-recipe", best_limit, 2 * decode_limit, lambda t: best_recipe(data, work, out, s, t))
    for beam in (1, 5):
        check.stage(f"decode-beam{beam}", decode_limit, decode_limit if beam == 1 else 0,
                    lambda t, b=beam: decoding(data, work, out, s, b, t))
    lines = summary_lines(check.summary)
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
