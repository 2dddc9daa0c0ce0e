"""Is bf16 as accurate as fp32 on this CPU? Train one recipe twice for the same number of
steps (same seed, same batches), once per precision, and compare dev BLEU and loss at equal
steps, and the speed.

    python benchmarks/precision.py --data DATA_DIR --recipe recipes/gru-attention.toml --steps 1200
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--recipe", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--valid-every", type=int, default=400)
    parser.add_argument("--work", type=Path, default=Path("work/bench/precision"))
    args = parser.parse_args()
    results = {}
    for precision in ("fp32", "bf16"):
        run = args.work / precision
        subprocess.run(
            [sys.executable, "-m", "mtkit", "train", "--recipe", str(args.recipe), "--data", str(args.data),
             "--out", str(run), "--force", "--precision", precision, "--max-steps", str(args.steps),
             "--max-time", "none", "--valid-every", str(args.valid_every)],
            check=True,
        )
        results[precision] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    print(f"\n{args.recipe.name}, same seed and batches, {args.steps} steps")
    print("| step | fp32 dev BLEU | bf16 dev BLEU | fp32 dev loss | bf16 dev loss |")
    print("|---|---|---|---|---|")
    for a, b in zip(results["fp32"], results["bf16"]):
        print(f"| {a['step']} | {a['dev_bleu']:.2f} | {b['dev_bleu']:.2f} | {a['dev_loss']:.3f} | {b['dev_loss']:.3f} |")
    speed = {p: r[-1]["target_tokens"] / r[-1]["elapsed"] for p, r in results.items()}
    print(f"target tokens/s over the run (validation included): fp32 {speed['fp32']:,.0f}, bf16 {speed['bf16']:,.0f}")


if __name__ == "__main__":
    main()
