"""Two runs of one recipe with different seeds, each alone and as an ensemble: the README's table.

    python benchmarks/ensemble.py --data ../shared/data/fra-eng.zip [--recipe R] [--budget 10m]
    (or: make bench-ensemble DATA=...; QUICK=1 for 1-minute runs on a slice of the corpus)

Both runs train through the CLI, one after the other, for the same time budget on the same data
directory (so they share the vocabularies an ensemble needs), then each model and the ensemble
of both (`--model A --model B`) translate the test split with greedy search and beam 5. Scores
are sacreBLEU against every reference of each source, as in the recipes table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from recipes import mtkit


def test_scores(models: list[Path], data: Path, beam: int) -> tuple[float, float]:
    """Test BLEU and the seconds the translation took (model loading included)."""
    args = [arg for model in models for arg in ("--model", model)]
    start = time.perf_counter()
    out = mtkit("evaluate", *args, "--data", data, "--beam", beam, "--json", capture=True)
    return json.loads(out)["bleu"], time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="corpus (.zip/.tsv); default: download the book's")
    parser.add_argument("--recipe", type=Path, default=Path("recipes/gru-attention.toml"))
    parser.add_argument("--budget", default="10m", help="training time of each run")
    parser.add_argument("--seeds", type=int, nargs=2, default=[1, 2])
    parser.add_argument("--work", type=Path, default=Path("work/bench/ensemble"))
    parser.add_argument("--quick", action="store_true",
                        help="a check of the script: 1-minute runs on the first 20,000 pairs")
    parser.add_argument("--reuse", action="store_true", help="score runs already in --work instead of retraining them")
    args = parser.parse_args()
    budget = "1m" if args.quick else args.budget
    slice_flags = ["--max-examples", "20000"] if args.quick else []
    data = args.work / "data"
    if not (args.reuse and (data / "manifest.json").exists()):
        mtkit("preprocess", *([args.data] if args.data else []), "--recipe", args.recipe, *slice_flags, "--out", data, "--force")
    runs = []
    for seed in args.seeds:
        run = args.work / f"seed{seed}"
        if not (args.reuse and (run / "best.pt").exists()):
            mtkit("train", "--recipe", args.recipe, "--data", data, "--out", run, "--seed", seed, "--max-time", budget, "--force")
        runs.append(run)
    rows = []
    for name, models in ((f"seed {args.seeds[0]}", runs[:1]), (f"seed {args.seeds[1]}", runs[1:]), ("ensemble of both", runs)):
        (greedy, greedy_s), (beam, beam_s) = test_scores(models, data, 1), test_scores(models, data, 5)
        metrics = [[json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()] for run in models]
        rows.append({
            "model": name, "updates": "+".join(str(m[-1]["step"]) for m in metrics),
            "dev_bleu": max(v["dev_bleu"] for v in metrics[0]) if len(models) == 1 else None,
            "test_bleu_greedy": greedy, "test_bleu_beam5": beam, "seconds_greedy": greedy_s, "seconds_beam5": beam_s,
        })
        print(json.dumps(rows[-1]), flush=True)
    print()
    print(f"{args.recipe.name}, {budget} per run{' (quick check: a 20,000-pair slice)' if args.quick else ''}:")
    print()
    print("| model | updates | dev BLEU | test BLEU greedy | test BLEU beam 5 | evaluate s greedy | evaluate s beam 5 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        dev = f"{r['dev_bleu']:.1f}" if r["dev_bleu"] is not None else ""
        print(f"| {r['model']} | {r['updates']} | {dev} | {r['test_bleu_greedy']:.1f} | {r['test_bleu_beam5']:.1f} | "
              f"{r['seconds_greedy']:.0f} | {r['seconds_beam5']:.0f} |")


if __name__ == "__main__":
    main()
