"""Scoring the dev split during training: teacher-forced loss, and BLEU and chrF of searched
translations against every reference of each dev source."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtkit.data.batching import bucket_batches, make_batch
from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions, decode
from mtkit.device import autocast
from mtkit.evaluation import corpus_bleu_chrf
from mtkit.models.seq2seq import Seq2Seq


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
    def loss(self, model: Seq2Seq, device: torch.device, precision: str) -> float:
        """Mean cross-entropy per target token (``<eos>`` included), without label smoothing."""
        model.eval()
        total, tokens = 0.0, 0
        lengths = self.split.src_lengths, self.split.tgt_lengths
        for indices in bucket_batches(*lengths, batch_tokens=4000, truncate=self.truncate):
            batch = make_batch(self.split, indices, self.truncate).to(device)
            with autocast(device, precision):
                loss, n = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            total, tokens = total + float(loss), tokens + n
        return total / max(1, tokens)

    def score(self, model: Seq2Seq, device: torch.device, precision: str) -> DevScores:
        with autocast(device, precision):
            hyps = decode(model, self.sources, self.search, device=device)
        outputs = [self.tgt.decode(nbest[0].tokens) for nbest in hyps]
        bleu, chrf = corpus_bleu_chrf(outputs, self.references)
        return DevScores(self.loss(model, device, precision), bleu, chrf, outputs)

    def examples(self, translations: list[str], count: int) -> list[tuple[str, str, str]]:
        """The first ``count`` dev sources with their first reference and ``translations``."""
        return list(zip(self.texts.sources, (refs[0] for refs in self.references), translations))[:count]
