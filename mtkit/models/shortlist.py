"""Vocabulary shortlists: search scores only the target tokens a sentence plausibly needs.

A lexical shortlist (as in Marian and Sockeye) keeps, for a sentence, the ``k`` most frequent
target tokens, ``<eos>``, and for each of its source tokens the ``k`` target tokens most
associated with it in the training data. Association is the Dice coefficient of the two tokens'
sentence-level co-occurrence, 2·c(s, t) / (c(s) + c(t)), which does not favour frequent target
tokens the way c(s, t) alone does (those are in the list anyway).

A batch computes the output layer once, for the union of its sentences' lists; each sentence
then normalises over its own list only, so its result does not depend on its neighbours.
Probabilities are renormalised over the list: scores are log-probabilities under the shortlist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mtkit.data.dataset import EncodedSide, EncodedSplit
from mtkit.data.vocab import EOS, PAD
from mtkit.models.quantize import Int8Linear


@dataclass
class VocabSubset:
    """One batch's restriction of the output layer: the union of its rows' lists (``columns``,
    vocabulary ids), which of them each row may not use (``blocked``, rows × columns), the
    output layer for those columns only, and each column's place (``position``: id → column)."""

    columns: Tensor
    blocked: Tensor
    layer: nn.Module
    position: dict[int, int]

    def index_select(self, index: Tensor) -> VocabSubset:
        return replace(self, blocked=self.blocked.index_select(0, index))


class SelectedLinear(nn.Module):
    """Some output rows of a linear layer."""

    def __init__(self, layer: nn.Linear, rows: Tensor) -> None:
        super().__init__()
        self.weight = layer.weight.detach()[rows]
        self.bias = None if layer.bias is None else layer.bias.detach()[rows]
        self.out_features = len(rows)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class Shortlist:
    """Per source token, the ``k`` most associated target tokens; plus the ``k`` most frequent."""

    def __init__(self, table: Tensor, frequent: Tensor) -> None:
        self.table = table  # (source vocabulary, k) target ids; EOS where a token has fewer
        self.frequent = frequent  # (k,) target ids

    @classmethod
    def learn(cls, train: EncodedSplit, src_vocab: int, tgt_vocab: int, k: int) -> Shortlist:
        """Count, over the training pairs, in how many sentences each source token, target token
        and (source, target) pair occur, and keep the best ``k`` targets by Dice per source."""
        src_sentence, src_token = _present(train.src, src_vocab)
        tgt_sentence, tgt_token = _present(train.tgt, tgt_vocab)
        src_count = torch.bincount(src_token, minlength=src_vocab)
        tgt_count = torch.bincount(tgt_token, minlength=tgt_vocab)
        # Every (source, target) pair of each sentence: each source entry is repeated once per
        # target token of its sentence and paired with those in turn.
        per_sentence = torch.bincount(tgt_sentence, minlength=len(train))
        first = torch.cumsum(per_sentence, 0) - per_sentence
        repeats = per_sentence[src_sentence]
        pair_src = src_token.repeat_interleave(repeats)
        start = torch.cumsum(repeats, 0) - repeats
        within = torch.arange(len(pair_src)) - start.repeat_interleave(repeats)
        pair_tgt = tgt_token[first[src_sentence].repeat_interleave(repeats) + within]
        pairs, together = torch.unique(pair_src * tgt_vocab + pair_tgt, return_counts=True)
        source, target = pairs // tgt_vocab, pairs % tgt_vocab
        dice = 2 * together / (src_count[source] + tgt_count[target])
        # Best first within each source token: sort by Dice, then (stably) by source token.
        order = torch.sort(dice, descending=True, stable=True).indices
        order = order[torch.sort(source[order], stable=True).indices]
        source, target = source[order], target[order]
        rank = torch.arange(len(source)) - torch.searchsorted(source, source)
        keep = rank < k
        table = torch.full((src_vocab, k), EOS, dtype=torch.int64)
        table[source[keep], rank[keep]] = target[keep]
        frequent = torch.argsort(tgt_count, descending=True, stable=True)[:k]
        return cls(table, frequent)

    def subset(self, src: Tensor, generator: nn.Module) -> VocabSubset:
        """The restriction for a padded batch of sources (B, S)."""
        vocab = generator.out_features
        table = self.table.to(src.device)
        tokens = src.masked_fill(src == PAD, EOS)  # every source ends in <eos>: padding adds nothing
        lists = torch.cat([table[tokens].flatten(1), self.frequent.to(src.device).expand(src.size(0), -1)], dim=1)
        allowed = torch.zeros(src.size(0), vocab, dtype=torch.bool, device=src.device)
        allowed.scatter_(1, lists, True)
        allowed[:, EOS] = True
        columns = allowed.any(dim=0).nonzero().squeeze(1)
        if isinstance(generator, Int8Linear):
            layer = generator.select(columns)
        else:
            layer = SelectedLinear(generator, columns)
        position = {token: i for i, token in enumerate(columns.tolist())}
        return VocabSubset(columns, ~allowed[:, columns], layer, position)


def _present(side: EncodedSide, vocab: int) -> tuple[Tensor, Tensor]:
    """(sentence, token) for every distinct token of every sentence, by sentence."""
    lengths = torch.from_numpy(side.lengths.astype(np.int64))
    sentence = torch.arange(len(lengths)).repeat_interleave(lengths)
    pairs = torch.unique(sentence * vocab + torch.from_numpy(np.asarray(side.ids, dtype=np.int64)))
    return pairs // vocab, pairs % vocab
