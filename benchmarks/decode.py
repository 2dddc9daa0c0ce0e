"""Decoding speed and quality: translate a split with greedy search and beam search.

    python benchmarks/decode.py --model RUN_DIR --data DATA_DIR [--beams 1 5] [--runs 3]
    (make bench-decode MODEL=... DATA_DIR=...)

Times the whole path a user pays for (raw text in, detokenised text out) and prints
sentences/s and target tokens/s (median of --runs after a warm-up run) next to test BLEU.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions
from mtkit.evaluation import corpus_scores
from mtkit.translate import Translator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="default: mtkit's (512/beam)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    evalset = DataDir(args.data).eval_set(args.split)
    translators = {p: Translator(args.model, precision=p) for p in args.precision}
    model = next(iter(translators.values())).run.recipe.model
    print(f"{args.split}: {len(evalset.sources):,} sentences; {torch.get_num_threads()} threads; model {model}")
    print()
    print("| search | precision | sentences/s | target tokens/s | test BLEU | chrF |")
    print("|---|---|---|---|---|---|")
    for beam, (precision, translator) in itertools.product(args.beams, translators.items()):
        options = SearchOptions(beam=beam)
        results = translator.nbest(evalset.sources, options, args.batch_size)  # warm-up
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            results = translator.nbest(evalset.sources, options, args.batch_size)
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        outputs = [hyps[0][0] if hyps else "" for hyps in results]
        tokens = sum(len(hyps[0][1].tokens) + 1 for hyps in results if hyps)  # + <eos>
        scores = corpus_scores(outputs, evalset.references)
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(f"| {name} | {precision} | {len(outputs) / seconds:,.0f} | {tokens / seconds:,.0f} | {scores.bleu:.1f} | {scores.chrf:.1f} |", flush=True)


if __name__ == "__main__":
    main()
