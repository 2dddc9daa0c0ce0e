"""Measuring mtkit (and its peers) from the outside, through the command line only: wall time and
peak memory of a command, decoding speed without start-up, training throughput from a run's
metrics.jsonl, and test BLEU from `mtkit evaluate`. Shared by peers/compare.py and gpu_check.py.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


def mtkit_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "mtkit", *map(str, args)]


def mtkit(*args: object, log: Path | None = None, timeout: float | None = None) -> None:
    """Run an mtkit command, its output appended to ``log``; raise with mtkit's last line
    (its error message) if it fails."""
    with open(log or os.devnull, "ab") as out:
        done = subprocess.run(mtkit_command(*args), stdout=out, stderr=out, timeout=timeout)
    if done.returncode != 0:
        last = log.read_text(errors="replace").strip().splitlines()[-1:] if log else []
        raise RuntimeError(f"mtkit {args[0]} exited with {done.returncode}: {last[0] if last else ''}")


def run_measured(command: list, *, stdin: Path | None = None, stdout: Path | None = None,
                 log: Path | None = None, until=None, timeout: float | None = None) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, its peak resident memory in MB). ``until(process)``,
    if given, is called every half second while it runs (it may signal the process: an exit
    by SIGINT is then no failure). Past ``timeout`` seconds the process is killed."""
    command = [str(c) for c in command]
    with open(stdin or os.devnull, "rb") as source, open(stdout or os.devnull, "wb") as sink, \
            open(log or os.devnull, "ab") as errors:
        start = time.perf_counter()
        # A command run in the background (`make bench-peers &`) inherits SIGINT ignored, and
        # Python then installs no KeyboardInterrupt handler: give the child the default back.
        process = subprocess.Popen(command, stdin=source, stdout=sink, stderr=errors,
                                   preexec_fn=_default_sigint if until else None)
        timer = threading.Timer(timeout, process.kill) if timeout else None
        if timer:
            timer.start()
        try:
            # os.wait4 reaps the child itself and hands back its resource usage (peak RSS).
            pid, status, usage = os.wait4(process.pid, os.WNOHANG if until else 0)
            while pid == 0:
                until(process)
                time.sleep(0.5)
                pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        finally:
            if timer:
                timer.cancel()
        seconds = time.perf_counter() - start
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if timeout and code == -signal.SIGKILL and seconds >= timeout:
        raise subprocess.TimeoutExpired(command, timeout)
    if code != 0 and not (until is not None and code in (-signal.SIGINT, 130)):
        raise RuntimeError(f"{shlex.join(command)} failed ({code}){f'; see {log}' if log else ''}")
    return seconds, usage.ru_maxrss / 1024


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def decode_speed(command: list, sources: Path, work: Path, name: str,
                 timeout: float | None = None) -> tuple[Path, float]:
    """Translate ``sources`` with ``command`` (reading stdin, writing stdout); return the output
    file and sentences/s, start-up excluded: the same command's wall time on one sentence
    (start-up and model loading) is subtracted from its wall time on all of them. Both runs
    together get ``timeout`` seconds."""
    lines = sources.read_text(encoding="utf-8").splitlines()
    one = work / f"{name}.one.src"
    one.write_text(lines[0] + "\n", encoding="utf-8")
    hyp = work / f"{name}.hyp"
    startup, _ = run_measured(command, stdin=one, stdout=work / f"{name}.one.hyp", log=work / f"{name}.log",
                              timeout=timeout)
    left = None if timeout is None else max(timeout - startup, 1.0)
    total, _ = run_measured(command, stdin=sources, stdout=hyp, log=work / f"{name}.log", timeout=left)
    produced = len(hyp.read_text(encoding="utf-8").splitlines())
    if produced != len(lines):
        raise RuntimeError(f"{name}: {produced} output lines for {len(lines)} sources")
    return hyp, len(lines) / max(total - startup, 1e-9)


def score_bleu(hyp: Path, data: Path, split: str = "test") -> float:
    """sacreBLEU (cased, 13a, every reference) through `mtkit evaluate`: one scoring call for all."""
    out = subprocess.run(mtkit_command("evaluate", "--hyp", hyp, "--ref", data / f"{split}.refs.jsonl", "--json"),
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["bleu"]


def read_metrics(run: Path) -> list[dict]:
    """One dict per validation of an mtkit run."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def training_throughput(metrics: list[dict]) -> float:
    """Target tokens per second of training, validations excluded: each validation window's
    tokens over the time its steps took."""
    tokens = seconds = 0.0
    previous = 0
    for m in metrics:
        window, previous = m["target_tokens"] - previous, m["target_tokens"]
        if m.get("tokens_per_second"):
            tokens += window
            seconds += window / m["tokens_per_second"]
    return tokens / seconds if seconds else float("nan")
