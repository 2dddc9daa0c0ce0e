"""Train every recipe for its budget on one shared split, then score it: the README's table.

    python benchmarks/recipes.py --data ../shared/data/fra-eng.zip recipes/gru.toml ...
    (or: make bench-recipes DATA=...)

Recipes with the same [data] section share one data directory; all use the same split settings,
so they are scored on the same test sentences. Each is trained through the CLI exactly as a
user would, one after the other (never concurrently: throughput is part of the result).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from mtkit.config import load_recipe


def mtkit(*args: object, capture: bool = False) -> str:
    result = subprocess.run([sys.executable, "-m", "mtkit", *map(str, args)], check=True,
                            capture_output=capture, text=True)
    return result.stdout if capture else ""


def test_bleu(run: Path, data: Path, beam: int) -> float:
    out = mtkit("evaluate", "--model", run, "--data", data, "--beam", beam, "--json", capture=True)
    return json.loads(out)["bleu"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", type=Path)
    parser.add_argument("--data", default=None, help="corpus (.zip/.tsv); default: download the book's")
    parser.add_argument("--work", type=Path, default=Path("work/bench-recipes"))
    parser.add_argument("--reuse", action="store_true",
                        help="score runs already in --work instead of retraining them (delete a run to retrain it)")
    args = parser.parse_args()
    sections = {r: dataclasses.asdict(load_recipe(r).data) for r in args.recipes}
    split_keys = ("split", "dev_size", "test_size", "seed", "max_examples", "reverse")
    if len({json.dumps({k: d.get(k) for k in split_keys}, sort_keys=True) for d in sections.values()}) != 1:
        sys.exit("recipes differ in their split settings: they would not be scored on the same test set")
    data_dirs: dict[str, Path] = {}
    rows = []
    for recipe in args.recipes:
        key = json.dumps(sections[recipe], sort_keys=True)
        if key not in data_dirs:
            data_dirs[key] = args.work / f"data-{recipe.stem}"
            if not (args.reuse and (data_dirs[key] / "manifest.json").exists()):
                mtkit("preprocess", *([args.data] if args.data else []), "--recipe", recipe, "--out", data_dirs[key], "--force")
        data = data_dirs[key]
        run = args.work / recipe.stem
        if not (args.reuse and (run / "best.pt").exists()):
            mtkit("train", "--recipe", recipe, "--data", data, "--out", run, "--force")
        config = json.loads((run / "config.json").read_text())
        model = config["model"]
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        last = metrics[-1]
        params = next(line for line in (run / "train.log").read_text().splitlines() if "parameters" in line)
        rows.append({
            "recipe": recipe.name, "cell": model["cell"], "layers": model["layers"],
            "bidirectional": model["bidirectional"], "attention": model["attention"],
            "parameters": params.split(": ")[1].split(" parameters")[0],
            "precision": config["train"]["precision"],
            "tokens_per_second": last["target_tokens"] / last["elapsed"],
            "steps": last["step"], "dev_bleu": max(m["dev_bleu"] for m in metrics),
            "test_bleu_greedy": test_bleu(run, data, 1), "test_bleu_beam5": test_bleu(run, data, 5),
        })
        print(json.dumps(rows[-1]), flush=True)
    print()
    print("| recipe | cell | layers | bidirectional | attention | parameters | precision | target tokens/s | updates | dev BLEU | test BLEU greedy | test BLEU beam 5 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['cell']} | {r['layers']} | {'yes' if r['bidirectional'] else 'no'} | "
              f"{r['attention']} | {r['parameters']} | {r['precision']} | {r['tokens_per_second']:,.0f} | {r['steps']:,} | "
              f"{r['dev_bleu']:.1f} | {r['test_bleu_greedy']:.1f} | {r['test_bleu_beam5']:.1f} |")


if __name__ == "__main__":
    main()
