"""Streaming translation in bounded memory: peak RSS for inputs of growing length.

    python benchmarks/stream_memory.py --model RUN_DIR --data DATA_DIR [--lines 20000 200000]

Builds input files by cycling the test sources, runs `mtkit translate` on each in a child
process and reports that process's own peak resident memory (from wait4), its time, and
whether it wrote exactly one output line per input line.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mtkit.data.dataset import DataDir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--lines", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--beam", type=int, default=1)
    args = parser.parse_args()
    sources = DataDir(args.data).eval_set("test").sources
    print("| input lines | output lines | seconds | peak RSS |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.lines:
            source, output = Path(tmp) / f"in-{count}.txt", Path(tmp) / f"out-{count}.txt"
            source.write_text("".join(f"{s}\n" for s in itertools.islice(itertools.cycle(sources), count)), encoding="utf-8")
            start = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-m", "mtkit", "translate", "--model", args.model,
                                      str(source), "-o", str(output), "--beam", str(args.beam)])
            _, status, usage = os.wait4(child.pid, 0)
            seconds = time.perf_counter() - start
            if status != 0:
                sys.exit(f"mtkit translate failed on {count} lines (status {status})")
            with open(output, "rb") as handle:
                written = sum(1 for _ in handle)
            print(f"| {count:,} | {written:,} | {seconds:,.0f} | {usage.ru_maxrss / 1024:,.0f} MB |", flush=True)


if __name__ == "__main__":
    main()
