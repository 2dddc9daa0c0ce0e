"""Scoring the dev split during training: teacher-forced loss, and BLEU and chrF of searched
translations against every reference of each dev source.

In distributed training every process translates and scores a slice of the dev set and
process 0 puts the pieces together in order: the same translations (a sentence's translation
never depends on its batch) and the same sums, added in the same order, as one process alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtkit.data.batching import bucket_batches, make_batch
from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions, decode
from mtkit.device import autocast
from mtkit.evaluation import corpus_bleu_chrf
from mtkit.models.seq2seq import Seq2Seq
from mtkit.training.distributed import Distributed, gather_objects

LOSS_BATCH_TOKENS = 4000


@dataclass
class DevScores:
    loss: float
    bleu: float
    chrf: float
    translations: list[str]  # one per dev source


class DevSet:
    """The dev split of a data directory, scored the same way at every validation."""

    def __init__(self, data: DataDir, search: SearchOptions, truncate: int | None = None) -> None:
        self.split = data.encoded("dev")
        self.texts = data.eval_set("dev")
        self.references = self.texts.references
        self.tgt = data.processor("tgt")
        self.search, self.truncate = search, truncate
        self.sources = self.split.first_of_each_group()  # translate each dev source once

    @torch.no_grad()
    def loss_terms(
        self, model: Seq2Seq, device: torch.device, precision: str, dist: Distributed
    ) -> list[tuple[int, float, int]]:
        """(batch number, summed cross-entropy, target tokens) of this process's share of the
        dev batches: ``<eos>`` included, no label smoothing."""
        model.eval()
        lengths = self.split.src_lengths, self.split.tgt_lengths
        plan = bucket_batches(*lengths, batch_tokens=LOSS_BATCH_TOKENS, truncate=self.truncate)
        terms = []
        for k in range(dist.rank, len(plan), dist.world):
            batch = make_batch(self.split, plan[k], self.truncate).to(device)
            with autocast(device, precision):
                loss, n = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            terms.append((k, float(loss), n))
        return terms

    def score(
        self, model: Seq2Seq, device: torch.device, precision: str, dist: Distributed = Distributed()
    ) -> DevScores | None:
        """The dev scores, on process 0 (None on the others, which score their slices for it)."""
        with autocast(device, precision):
            hyps = decode(model, self.sources[dist.rank :: dist.world], self.search, device=device)
        mine = [nbest[0].tokens for nbest in hyps], self.loss_terms(model, device, precision, dist)
        pieces = gather_objects(mine, dist)
        if not dist.is_main:
            return None
        outputs: list[str] = [""] * len(self.sources)
        for rank, (tokens, _) in enumerate(pieces):
            outputs[rank :: dist.world] = [self.tgt.decode(t) for t in tokens]
        bleu, chrf = corpus_bleu_chrf(outputs, self.references)
        terms = sorted(term for _, part in pieces for term in part)
        loss, tokens = sum(t[1] for t in terms), sum(t[2] for t in terms)
        return DevScores(loss / max(1, tokens), bleu, chrf, outputs)

    def examples(self, translations: list[str], count: int) -> list[tuple[str, str, str]]:
        """The first ``count`` dev sources with their first reference and ``translations``."""
        return list(zip(self.texts.sources, (refs[0] for refs in self.references), translations))[:count]
