"""Synthetic parallel data: copy or reverse random "word" sequences (Joey NMT's and Sockeye's
smoke tests). A correct model learns them to near-perfect BLEU within seconds."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(20)]


def make_task(kind: str, n: int, seed: int, min_len: int = 3, max_len: int = 8) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [rng.choice(WORDS) for _ in range(rng.randint(min_len, max_len))]
        target = seq[::-1] if kind == "reverse" else seq
        pairs.append((" ".join(seq), " ".join(target)))
    return pairs


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path
