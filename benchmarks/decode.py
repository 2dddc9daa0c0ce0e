"""Decoding speed and quality: translate a split with greedy search and beam search.

    python benchmarks/decode.py --model RUN_DIR --data DATA_DIR [--beams 1 5] [--runs 3]
    (make bench-decode MODEL=... DATA_DIR=...)

Times the whole path a user pays for (raw text in, detokenised text out) and prints
sentences/s and target tokens/s (median of --runs after a warm-up run) next to test BLEU and
its difference from fp32, for each configuration: precision, --quantize, --shortlist, and how
the cores are used (one search thread per core, mtkit's default on a CPU, or one batch at a
time with PyTorch's ops split across the cores, as before).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import mtkit  # noqa: F401  first: it sets MKL_CBWR before torch starts, as in the CLI
import torch

from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions
from mtkit.evaluation import corpus_scores
from mtkit.translate import Translator

# (precision, quantize, shortlist, search threads per core)
CONFIGS = [
    ("fp32", "none", 0, True),
    ("bf16", "none", 0, False),
    ("bf16", "none", 0, True),
    ("bf16", "int8", 0, True),
    ("bf16", "int8", 50, True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: mtkit's (512/beam)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences (a quick check)")
    parser.add_argument("--profile", action="store_true", help="also print, on stderr, the operators that take a bf16 greedy pass's time")
    args = parser.parse_args()
    evalset = DataDir(args.data).eval_set(args.split)
    sources, references = evalset.sources[: args.limit], evalset.references[: args.limit]
    translators = {}
    for precision, quantize, shortlist, _ in CONFIGS:
        key = precision, quantize, shortlist
        if key not in translators:
            translators[key] = Translator(args.model, precision=precision, quantize=quantize, shortlist=shortlist, shortlist_data=args.data)
    model = next(iter(translators.values())).run.recipe.model
    print(f"{args.split}: {len(sources):,} sentences; {torch.get_num_threads()} threads; torch {torch.__version__}; model {model}")
    print()
    print("| search | precision | quantize | shortlist | cores | sentences/s | target tokens/s | test BLEU | vs fp32 | chrF |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for beam in args.beams:
        options = SearchOptions(beam=beam)
        fp32_bleu = None
        for precision, quantize, shortlist, threads in CONFIGS:
            translator = translators[precision, quantize, shortlist]
            translator.workers = torch.get_num_threads() if threads else 1
            results = translator.nbest(sources, options, args.batch_size)  # warm-up
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                results = translator.nbest(sources, options, args.batch_size)
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            outputs = [hyps[0][0] if hyps else "" for hyps in results]
            tokens = sum(len(hyps[0][1].tokens) + 1 for hyps in results if hyps)  # + <eos>
            scores = corpus_scores(outputs, references)
            fp32_bleu = scores.bleu if fp32_bleu is None else fp32_bleu
            name = "greedy" if beam == 1 else f"beam {beam}"
            cores = "a search thread each" if threads else "ops split across"
            print(
                f"| {name} | {precision} | {quantize} | {shortlist or '-'} | {cores} | {len(outputs) / seconds:,.0f} | "
                f"{tokens / seconds:,.0f} | {scores.bleu:.1f} | {scores.bleu - fp32_bleu:+.2f} | {scores.chrf:.1f} |",
                flush=True,
            )
    if args.profile:
        profile_greedy(translators["bf16", "none", 0], sources, args.batch_size)


def profile_greedy(translator: Translator, sources: list[str], batch_size: int | None) -> None:
    """The operators of one greedy pass (one batch at a time, the ops split across the cores)."""
    from torch.profiler import ProfilerActivity, profile

    translator.workers = 1
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        translator.nbest(sources, SearchOptions(beam=1), batch_size)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)


if __name__ == "__main__":
    main()
