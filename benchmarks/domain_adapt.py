"""Domain adaptation on the shared corpus: a model that never saw Tom, fine-tuned on Tom.

    python benchmarks/domain_adapt.py --data ../shared/data/fra-eng.zip      (make bench-domain DATA=...)
    python benchmarks/domain_adapt.py --data ../shared/data/fra-eng.zip --quick   (about 2 minutes: a check, no figures)

Every pair whose English mentions "Tom" (a whole word: "Tom", "Tom's") is held out of the general
corpus. The best recipe trains on the rest for --minutes (10); its own split gives the general test
set. The held-out pairs are grouped by English sentence and cut into a domain test set, a domain dev
set and a pool from which --adapt-pairs (3,000) training pairs are drawn; they are encoded with
the general run's tokenisers (`mtkit preprocess --tokenizers-from`) and the general model is
fine-tuned on them for --adapt-minutes (2) with `mtkit train --init`. The script prints test BLEU
(sacreBLEU, beam 5, every reference of each source) on the domain and on the general test set
before and after fine-tuning. Everything runs through the CLI, one command at a time.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from recipes import mtkit, test_bleu

TOPIC = re.compile(r"\bTom\b")


def read_pairs(corpus: str | None, work: Path) -> list[tuple[str, str]]:
    """Every pair of the corpus as mtkit reads it (cleaned, in file order): a data directory of
    one training split holds them as text."""
    everything = work / "all-pairs"
    mtkit("preprocess", *([corpus] if corpus else []), "--tokenizer", "word", "--split", "ordered", "--dev-size", 0, "--test-size", 0,
          "--out", everything, "--force", capture=True)
    sources = (everything / "train.en").read_text(encoding="utf-8").splitlines()
    targets = (everything / "train.fr").read_text(encoding="utf-8").splitlines()
    return list(zip(sources, targets, strict=True))


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path


def split_domain(pairs: list[tuple[str, str]], test: int, dev: int, adapt: int, seed: int) -> dict[str, list]:
    """Test and dev sets of ``test`` and ``dev`` English sentences (with all their references) and
    ``adapt`` training pairs whose English sentences are in neither."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair[0], []).append(pair)
    sources = sorted(groups)
    random.Random(seed).shuffle(sources)
    if len(sources) <= test + dev:
        raise SystemExit(f"only {len(sources):,} held-out English sentences: lower --domain-test/--domain-dev")
    pool = [pair for source in sources[test + dev :] for pair in groups[source]]
    random.Random(seed).shuffle(pool)
    return {
        "test": [pair for source in sources[:test] for pair in groups[source]],
        "dev": [pair for source in sources[test : test + dev] for pair in groups[source]],
        "train": pool[:adapt],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="the corpus (.zip or .tsv); default: download the book's")
    parser.add_argument("--work", type=Path, default=Path("work/bench/domain"))
    parser.add_argument("--recipe", default="recipes/gru-attention.toml")
    parser.add_argument("--minutes", type=float, default=10, help="training budget of the general model")
    parser.add_argument("--adapt-minutes", type=float, default=2, help="fine-tuning budget")
    parser.add_argument("--adapt-pairs", type=int, default=3000, help="domain training pairs")
    parser.add_argument("--adapt-lr", type=float, default=0.001,
                        help="fine-tuning learning rate (the recipe's schedule: linear decay to 0)")
    parser.add_argument("--adapt-valid-every", type=int, default=50, help="fine-tuning: validate (and keep the best) every N steps")
    parser.add_argument("--domain-test", type=int, default=2000, help="domain test sources")
    parser.add_argument("--domain-dev", type=int, default=500, help="domain dev sources")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="a check of the pipeline in about 2 minutes: 30,000 general pairs, 30 s + 15 s of "
                             "training, small test sets (its figures mean nothing)")
    args = parser.parse_args()
    general_limits: list[object] = []
    if args.quick:
        args.minutes, args.adapt_minutes, args.adapt_valid_every = 0.5, 0.25, 10
        args.domain_test, args.domain_dev, args.adapt_pairs = 200, 100, 1000
        general_limits = ["--max-examples", 30_000, "--dev-size", 100, "--test-size", 200]
    args.work.mkdir(parents=True, exist_ok=True)

    pairs = read_pairs(args.data, args.work)
    topic = [p for p in pairs if TOPIC.search(p[0])]
    general = [p for p in pairs if not TOPIC.search(p[0])]
    domain = split_domain(topic, args.domain_test, args.domain_dev, args.adapt_pairs, seed=1)
    print(f"{len(pairs):,} pairs: {len(topic):,} mention Tom (held out), {len(general):,} general", flush=True)

    general_data, general_run = args.work / "general-data", args.work / "general"
    mtkit("preprocess", write_tsv(args.work / "general.tsv", general), "--recipe", args.recipe,
          *general_limits, "--out", general_data, "--force", capture=True)
    mtkit("train", "--recipe", args.recipe, "--data", general_data, "--out", general_run,
          "--max-time", f"{args.minutes * 60:g}s", "--force")

    files = {name: write_tsv(args.work / f"tom-{name}.tsv", part) for name, part in domain.items()}
    tom_data, tom_run = args.work / "tom-data", args.work / "tom-finetuned"
    mtkit("preprocess", "--train", files["train"], "--dev", files["dev"], "--test", files["test"],
          "--tokenizers-from", general_run, "--out", tom_data, "--force", capture=True)
    mtkit("train", "--recipe", args.recipe, "--init", general_run, "--data", tom_data, "--out", tom_run,
          "--lr", args.adapt_lr, "--max-time", f"{args.adapt_minutes * 60:g}s",
          "--valid-every", args.adapt_valid_every, "--force")

    rows = []
    for label, run in ((f"general, {args.minutes:g} min", general_run),
                       (f"+ fine-tuned {args.adapt_minutes:g} min on {len(domain['train']):,} Tom pairs", tom_run)):
        rows.append((label, test_bleu(run, tom_data, args.beam), test_bleu(run, general_data, args.beam)))
        print(json.dumps({"model": label, "domain_bleu": rows[-1][1], "general_bleu": rows[-1][2]}), flush=True)
    sizes = {name: len({s for s, _ in part}) for name, part in domain.items()}
    print()
    print(f"domain test: {sizes['test']:,} English sentences mentioning Tom ({len(domain['test']):,} pairs); "
          f"general test: the general run's test split; BLEU with beam {args.beam}")
    print()
    print("| model | Tom test BLEU | general test BLEU |")
    print("|---|---|---|")
    for label, tom, rest in rows:
        print(f"| {label} | {tom:.1f} | {rest:.1f} |")


if __name__ == "__main__":
    main()
