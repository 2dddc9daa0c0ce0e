"""Preprocess and train at scale: time and memory on corpora of 1M, 4M and 16M pairs.

    python benchmarks/scale.py [--data path/to/fra-eng.zip] [--sizes 1M,4M,16M] [--work work/bench/scale]

The corpora are generated from the Tatoeba archive, deterministically: pair k of every corpus is
the concatenation of 1 to 3 Tatoeba pairs drawn at random (numpy's PCG64, seed 0), sources
joined by a space and targets likewise, so lengths and vocabulary stay those of real sentences
(a corpus of N pairs is the first N lines of one stream: the larger corpora extend the smaller).
They are written as plain TSV once and reused.

For each size the script runs, each in a child process as a user would:

- ``mtkit preprocess CORPUS --out DATA`` with the default settings (SentencePiece 8k, a sample
  of at most 2M sentences and 32 MB per side, one worker per core): wall time, pairs per second, the peak
  resident memory of the whole process tree (workers included: the largest sum of the RSS of the
  process and its descendants, sampled every 50 ms) and the data directory's size on disk;
- ``mtkit train --recipe RECIPE --data DATA --max-steps 200``: seconds from the command's start
  to its first training step, the peak resident memory (its anonymous part, which does not
  include the memory-mapped data, in brackets) and the target tokens per second of the 200
  steps (from metrics.jsonl: step time only, start-up and validation excluded). Training runs
  ``--train-runs`` times per size, in rounds over the sizes so that the machine's drift falls
  on all of them alike: the table gives the medians and the largest memory.

It prints one Markdown table, and a JSON line per size with the details.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from mtkit.data.sources import BOOK_SHA1, BOOK_URL, download

SIZES = {"k": 1_000, "M": 1_000_000}


def parse_count(text: str) -> int:
    text = text.strip()
    return int(float(text[:-1]) * SIZES[text[-1]]) if text[-1:] in SIZES else int(text)


def tatoeba_pairs(archive: Path) -> list[tuple[str, str]]:
    with zipfile.ZipFile(archive) as handle:
        member = max((i for i in handle.infolist() if i.filename.endswith(".txt") and "/_" not in i.filename),
                     key=lambda i: i.file_size)
        lines = handle.read(member).decode("utf-8").splitlines()
    return [(c[0], c[1]) for c in (line.split("\t") for line in lines) if len(c) >= 2]


def generate(pairs: list[tuple[str, str]], count: int, path: Path, block: int = 100_000) -> None:
    """The first ``count`` pairs of the stream: 1-3 random Tatoeba pairs joined, per line."""
    if path.exists():
        return
    rng = np.random.default_rng(0)
    sources, targets = [s for s, _ in pairs], [t for _, t in pairs]
    partial = path.with_name(path.name + ".part")
    with open(partial, "w", encoding="utf-8", newline="\n") as out:
        for start in range(0, count, block):
            n = min(block, count - start)
            parts = rng.integers(1, 4, size=n)
            picks = rng.integers(0, len(pairs), size=(n, 3))
            lines = []
            for k, chosen in zip(parts.tolist(), picks.tolist()):
                chosen = chosen[:k]
                lines.append(" ".join([sources[i] for i in chosen]) + "\t" + " ".join([targets[i] for i in chosen]) + "\n")
            out.write("".join(lines))
    os.replace(partial, path)


class TreeMemory:
    """Samples the resident memory of a process and its descendants until it exits."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak_rss = self.peak_anon = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self) -> list[int]:
        pids, i = [self.pid], 0
        while i < len(pids):
            try:
                children = Path(f"/proc/{pids[i]}/task/{pids[i]}/children").read_text().split()
            except OSError:
                children = []
            pids += [int(c) for c in children]
            i += 1
        return pids

    def _run(self) -> None:
        while Path(f"/proc/{self.pid}").exists():
            rss = anon = 0
            for pid in self._tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                if "VmRSS" in fields:  # a zombie has none
                    rss += int(fields["VmRSS"].split()[0]) << 10
                    anon += int(fields["RssAnon"].split()[0]) << 10
            self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
            time.sleep(self.interval)

    def stop(self) -> None:
        self.thread.join()


def run(command: list[str], watch_for: str | None = None) -> dict:
    """Run a child process; its wall time, tree memory and (with ``watch_for``) the seconds until
    a stderr line starting with it."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    memory = TreeMemory(child.pid)
    seen_at, tail = None, []
    assert child.stderr is not None
    for line in child.stderr:
        tail = (tail + [line])[-20:]
        if watch_for and seen_at is None and line.startswith(watch_for):
            seen_at = time.perf_counter() - start
    status = child.wait()
    seconds = time.perf_counter() - start
    memory.stop()
    if status != 0:
        sys.exit(f"{' '.join(command)} failed ({status}):\n{''.join(tail)}")
    return {"seconds": seconds, "peak_rss": memory.peak_rss, "peak_anon": memory.peak_anon, "seen_at": seen_at}


def disk_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="the Tatoeba archive [default: the book's download]")
    parser.add_argument("--sizes", default="1M,4M,16M", help="comma-separated pair counts, e.g. 20k,50k")
    parser.add_argument("--work", default=Path("work/bench/scale"), type=Path)
    parser.add_argument("--recipe", default="recipes/gru-attention.toml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--preprocess-args", default="", help="extra options for mtkit preprocess")
    parser.add_argument("--train-runs", type=int, default=3, help="training runs per size (medians are reported)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [parse_count(s) for s in args.sizes.split(",")]
    pairs = tatoeba_pairs(args.data or download(BOOK_URL, BOOK_SHA1))
    mtkit = [sys.executable, "-m", "mtkit"]
    rows = []
    for count in sizes:
        corpus = args.work / f"corpus-{count}.tsv"
        generate(pairs, count, corpus)
        data = args.work / f"data-{count}"
        prep = run([*mtkit, "preprocess", str(corpus), "--out", str(data), "--force", *args.preprocess_args.split()])
        rows.append({
            "pairs": count, "preprocess_seconds": prep["seconds"], "pairs_per_second": count / prep["seconds"],
            "preprocess_peak_rss": prep["peak_rss"], "preprocess_peak_anon": prep["peak_anon"],
            "data_dir_bytes": disk_size(data), "corpus_bytes": corpus.stat().st_size, "train_runs": [],
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for _ in range(args.train_runs):
        for row in rows:
            data, run_dir = args.work / f"data-{row['pairs']}", args.work / f"run-{row['pairs']}"
            train = run([*mtkit, "train", "--recipe", args.recipe, "--data", str(data), "--out", str(run_dir), "--force",
                         "--max-steps", str(args.steps), "--train.log-every", "1"], watch_for="step 1 ")
            metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            train["target_tokens_per_second"] = metrics[-1]["tokens_per_second"]
            row["train_runs"].append(train)
            print(json.dumps({"pairs": row["pairs"], **train}), file=sys.stderr, flush=True)
    for row in rows:
        runs = row["train_runs"]
        row.update(
            first_step_seconds=statistics.median(r["seen_at"] for r in runs),
            train_peak_rss=max(r["peak_rss"] for r in runs), train_peak_anon=max(r["peak_anon"] for r in runs),
            target_tokens_per_second=statistics.median(r["target_tokens_per_second"] for r in runs),
        )
    print("| pairs | preprocess | pairs/s | preprocess peak RSS | data directory | first step | train peak RSS (anon) | target tokens/s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pairs']:,} | {r['preprocess_seconds']:,.0f} s | {r['pairs_per_second']:,.0f} | "
            f"{r['preprocess_peak_rss'] / 2**20:,.0f} MB | {r['data_dir_bytes'] / 2**20:,.0f} MB | "
            f"{r['first_step_seconds']:.1f} s | {r['train_peak_rss'] / 2**20:,.0f} MB ({r['train_peak_anon'] / 2**20:,.0f} MB) | "
            f"{r['target_tokens_per_second']:,.0f} |"
        )


if __name__ == "__main__":
    main()
