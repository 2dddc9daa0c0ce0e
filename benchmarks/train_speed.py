"""Training throughput: target tokens/s (median of timed windows after a warm-up), peak memory,
model FLOPs per target token and the fraction of this CPU's measured matmul peak achieved.

    python benchmarks/train_speed.py --data DATA_DIR [--recipe R] [--precision fp32 bf16]
    (make bench-train DATA=... builds the book's data directory and runs the book's model and
    the best recipe)

Each configuration runs in a fresh process (so peak memory is its own), through mtkit's own
training step (``Trainer.train_step``) on the training loop's batches (length-bucketed, made
ahead on a background thread: ``Trainer.prefetch``).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mtkit  # noqa: F401  first: it sets MKL_CBWR before torch starts, as in the CLI
import torch


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    """FLOP/s of a large square matrix product: the practical peak of this CPU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times)


def measure(args: argparse.Namespace) -> dict:
    from rich.console import Console
    from torch.utils.flop_counter import FlopCounterMode

    from mtkit.config import load_recipe, set_option
    from mtkit.data.dataset import DataDir
    from mtkit.training.loop import Trainer

    recipe = load_recipe(args.recipe)
    for dotted, value in (args.set or []):
        set_option(recipe, dotted, value)
    set_option(recipe, "train.precision", args.precision)
    set_option(recipe, "train.batch_tokens", args.batch_tokens)
    data = DataDir(args.data)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, data, Path(run_dir), Console(stderr=True))
        lr = recipe.train.lr
        with trainer.prefetch() as updates:  # the training loop's batches, made ahead
            for _ in range(args.warmup):
                trainer.train_step(next(updates), lr)
            flops = FlopCounterMode(display=False)
            with flops:
                _, counted_tokens, _ = trainer.train_step(next(updates), lr)
            rates = []
            for _ in range(args.windows):
                tokens, start = 0, time.perf_counter()
                for _ in range(args.window_steps):
                    tokens += trainer.train_step(next(updates), lr)[1]
                rates.append(tokens / (time.perf_counter() - start))
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(args.window_steps):
                        trainer.train_step(next(updates), lr)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)
        model = trainer.model
    return {
        "recipe": str(args.recipe), "precision": args.precision, "batch_tokens": args.batch_tokens,
        "parameters": sum(p.numel() for p in model.parameters()),
        "src_vocab": model.encoder.embedding.num_embeddings, "tgt_vocab": model.generator.out_features,
        "tokens_per_second": statistics.median(rates), "windows": rates,
        "flops_per_token": flops.get_total_flops() / counted_tokens,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--recipe", type=Path, action="append", help="repeatable; default: the built-in defaults")
    parser.add_argument("--set", nargs=2, action="append", metavar=("SECTION.KEY", "VALUE"), help="override, repeatable")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-tokens", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-steps", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="also print, on stderr, the operators that take a step's time")
    parser.add_argument("--single", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single:
        args.recipe = args.recipe[0] if args.recipe else None
        args.precision = args.precision[0]
        print(json.dumps(measure(args)))
        return
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"measured matmul peak (2048x2048): fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    print(f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print()
    print("| model | precision | batch tokens | parameters | vocab src/tgt | target tokens/s (median) | peak RSS | GFLOP per 1k target tokens | fraction of matmul peak |")
    print("|---|---|---|---|---|---|---|---|---|")
    for recipe in args.recipe or [None]:
        for precision in args.precision:
            command = [sys.executable, __file__, "--single", "--data", str(args.data), "--precision", precision,
                       "--batch-tokens", str(args.batch_tokens), "--warmup", str(args.warmup),
                       "--windows", str(args.windows), "--window-steps", str(args.window_steps)]
            command += ["--recipe", str(recipe)] if recipe else []
            command += ["--profile"] if args.profile else []
            for dotted, value in args.set or []:
                command += ["--set", dotted, value]
            finished = subprocess.run(command, check=True, capture_output=True, text=True)
            result = json.loads(finished.stdout)
            if args.profile:
                print(f"{recipe or 'defaults'} {precision}:\n{finished.stderr}", file=sys.stderr)
            achieved = result["tokens_per_second"] * result["flops_per_token"]
            name = Path(recipe).name if recipe else "defaults"
            print(
                f"| {name} | {precision} | {result['batch_tokens']:,} | {result['parameters']:,} | "
                f"{result['src_vocab']:,}/{result['tgt_vocab']:,} | {result['tokens_per_second']:,.0f} | "
                f"{result['peak_rss_mb']:,.0f} MB | {result['flops_per_token'] / 1e6:,.1f} | "
                f"{achieved / peaks[precision]:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
