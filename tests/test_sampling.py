"""Sampling (--sample, --temperature, --seed) and forced prefixes (--prefix)."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from conftest import cli_error, run_cli
from mtkit.data.batching import pad_sequences
from mtkit.data.vocab import BOS, EOS
from mtkit.decoding import SearchOptions, decode
from mtkit.decoding.beam import length_penalty
from mtkit.decoding.ensemble import Ensemble
from mtkit.errors import UsageError
from mtkit.translate import Translator
from test_search import ATTENTIONS, sources, teacher_forced_log_prob, tiny_model

SAMPLINGS = ["full", "topk:3", "nucleus:0.8"]


def sampled(model, srcs, spec, seed=1, temperature=1.0, **kwargs):
    options = SearchOptions(sample=spec, seed=seed, temperature=temperature)
    return [hyps[0] for hyps in decode(model, srcs, options, **kwargs)]


@pytest.mark.parametrize("spec", SAMPLINGS)
def test_a_seed_gives_the_same_samples_whatever_the_batch(spec):
    model = tiny_model("bahdanau", vocab=30)
    srcs = sources(40, vocab=30)
    reference = [h.tokens for h in sampled(model, srcs, spec, temperature=1.3, batch_size=1)]
    for batch_size, workers in ((7, 1), (64, 1), (64, 2)):
        assert [h.tokens for h in sampled(model, srcs, spec, temperature=1.3, batch_size=batch_size, workers=workers)] == reference
    # Each sentence's draws follow its number, not its place in the call.
    tail = sampled(model, srcs[25:], spec, temperature=1.3, sentences=range(25, 40))
    assert [h.tokens for h in tail] == reference[25:]
    assert [h.tokens for h in sampled(model, srcs, spec, seed=2, temperature=1.3)] != reference


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("spec", SAMPLINGS)
def test_sampled_scores_are_teacher_forced_log_probabilities(attention, spec):
    model = tiny_model(attention, vocab=12)
    srcs = sources(20, vocab=12)
    for src, hyp in zip(srcs, sampled(model, srcs, spec, temperature=0.7)):
        assert hyp.log_prob == pytest.approx(teacher_forced_log_prob(model, src, hyp.tokens), abs=1e-4)
        assert hyp.score == hyp.log_prob


def test_top_1_and_a_tiny_nucleus_are_greedy_search():
    model = tiny_model("luong", vocab=20)
    srcs = sources(30, vocab=20)
    greedy = [(h[0].tokens, h[0].log_prob) for h in decode(model, srcs, SearchOptions(beam=1))]
    for spec in ("topk:1", "nucleus:0.0001"):
        assert [(h.tokens, h.log_prob) for h in sampled(model, srcs, spec, temperature=2.0)] == greedy


def first_token_distribution(model, src, temperature):
    src_t, lengths = pad_sequences([torch.tensor(src)], EOS)
    with torch.no_grad():
        features = model(src_t, lengths, torch.tensor([[BOS]]))
        return torch.softmax(model.generator(features)[0, 0] / temperature, dim=-1)


@pytest.mark.parametrize("spec", SAMPLINGS)
def test_samples_follow_the_tempered_and_truncated_distribution(spec):
    """The first token of 4,000 samples of one sentence, against the distribution it is drawn
    from: the model's, sharpened by the temperature, cut to its top k or nucleus."""
    model = tiny_model("none", vocab=8, seed=3)
    with torch.no_grad():
        model.generator.weight.div_(3.0)  # a flatter distribution: many tokens get drawn
    src = [4, 5, 6]
    probs = first_token_distribution(model, src, temperature=0.8)
    probs[[0, 2]] = 0  # <pad> and <bos> are never output
    order = probs.argsort(descending=True)
    if spec == "topk:3":
        probs[order[3:]] = 0
    elif spec == "nucleus:0.8":
        before = probs[order].cumsum(0) / probs.sum() - probs[order] / probs.sum()
        probs[order[before >= 0.8]] = 0
    probs /= probs.sum()
    n = 4000
    drawn = sampled(model, [src] * n, spec, temperature=0.8)
    counts = torch.bincount(torch.tensor([h.tokens[0] if h.tokens else EOS for h in drawn]), minlength=8).double()
    for token in range(8):
        p = float(probs[token])
        if p == 0:
            assert counts[token] == 0, token
        else:  # within 5 standard deviations of the binomial count
            assert abs(counts[token] - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1, (token, counts[token], n * p)


# -- prefixes ----------------------------------------------------------------------------------


def prefixes_for(srcs, vocab, seed=7):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (int(torch.randint(0, 6, (1,), generator=g)),), generator=g).tolist() for _ in srcs]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("how", ["greedy", "beam", "sample", "ensemble"])
def test_a_prefix_is_always_respected_and_scored(attention, how):
    model = tiny_model(attention, vocab=12)
    srcs = sources(30, vocab=12)
    forced = prefixes_for(srcs, 12)
    # A short length limit: prefixes longer than it still fit, with their <eos>.
    limits = dict(max_len_a=0.0, max_len_b=3)
    options = {
        "greedy": SearchOptions(beam=1, **limits), "beam": SearchOptions(beam=4, nbest=4, **limits),
        "sample": SearchOptions(sample="full", **limits), "ensemble": SearchOptions(beam=3, nbest=2, **limits),
    }[how]
    searched, inputs = model, srcs
    if how == "ensemble":
        searched, inputs = Ensemble([model, tiny_model(attention, vocab=12, seed=5)]), [(s, s) for s in srcs]
    for src, prefix, hyps in zip(srcs, forced, decode(searched, inputs, options, prefixes=forced)):
        for hyp in hyps:
            assert hyp.tokens[: len(prefix)] == prefix
            assert len(hyp.tokens) <= max(3, len(prefix) + 1)
            members = searched.members if how == "ensemble" else [model]
            expected = sum(teacher_forced_log_prob(m, src, hyp.tokens) for m in members) / len(members)
            assert hyp.log_prob == pytest.approx(expected, abs=1e-4)
            if how in ("beam", "ensemble"):
                assert hyp.score == pytest.approx(hyp.log_prob / length_penalty(len(hyp.tokens) + 1, 0.75), abs=1e-6)


@pytest.mark.parametrize("beam", [1, 5])
def test_prefixed_search_does_not_depend_on_the_batch(beam):
    model = tiny_model("bahdanau", vocab=15)
    srcs = sources(40, vocab=15)
    forced = prefixes_for(srcs, 15)
    reference = [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam), batch_size=1, prefixes=forced)]
    for batch_size in (7, 64):
        assert [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam), batch_size=batch_size, prefixes=forced)] == reference
    # An empty prefix changes nothing.
    assert [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam), prefixes=[[] for _ in srcs])] == \
        [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam))]


# -- through the CLI ---------------------------------------------------------------------------

LINES = ["w1 w2 w3", "w4 w5 w6 w7", "", "w9", "w10 w11 w12 w13 w14", "w3 w2", "w8 w8 w8", "w15 w16"]


def test_translate_samples_reproducibly(tiny_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    flags = ["--sample", "nucleus:0.95", "--temperature", "1.5"]
    one = run_cli("translate", "--model", tiny_run, source, *flags, "--seed", "4", "--batch-size", "1", "--buffer", "3").stdout
    assert run_cli("translate", "--model", tiny_run, source, *flags, "--seed", "4", "--batch-size", "64").stdout == one
    assert len(one.splitlines()) == len(LINES) and one.splitlines()[2] == ""
    assert run_cli("translate", "--model", tiny_run, source, *flags, "--seed", "5").stdout != one


def test_translate_with_prefixes(tiny_run, tmp_path):
    source, prefix = tmp_path / "input.txt", tmp_path / "prefix.txt"
    source.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    starts = ["w7 w7", "", "w1", "w2 w3 w4 w5 w6 w7 w8 w9 w10 w11", "w14", "w0", "w8", "w19 w18"]
    prefix.write_text("".join(p + "\n" for p in starts), encoding="utf-8")
    for flags in (["--beam", "4", "--nbest", "2"], ["--sample", "full"]):
        out = run_cli("translate", "--model", tiny_run, source, "--prefix", prefix, *flags, "--format", "jsonl").stdout
        for start, line, result in zip(starts, LINES, map(json.loads, out.splitlines()), strict=True):
            texts = [h["text"] for h in result["hypotheses"]]
            assert (texts and all(t.startswith(start) for t in texts)) if line else texts == [], (start, texts)


def test_bad_sampling_and_prefix_options(tiny_run, tmp_path):
    source = tmp_path / "input.txt"
    source.write_text("w1\nw2\n", encoding="utf-8")
    (tmp_path / "short.txt").write_text("w1\n", encoding="utf-8")
    cases = [
        (["--sample", "topk:0"], "topk:K needs a whole K >= 1"),
        (["--prefix", tmp_path / "short.txt", "-o", tmp_path / "out.txt"], "--prefix has 1 lines, fewer than the input"),
    ]
    for flags, message in cases:
        assert message in cli_error("translate", "--model", tiny_run, source, *flags, status=2)
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(sample="nucleus:1.5"), "nucleus:P needs 0 < P <= 1"),
        (dict(sample="topk:2.5"), "topk:K needs a whole K >= 1"),
        (dict(sample="greedy"), "--sample must be full, topk:K or nucleus:P"),
        (dict(sample="full:3"), "--sample must be full, topk:K or nucleus:P"),
        (dict(sample="full", beam=3), "it takes no --beam, --nbest"),
        (dict(sample="full", nbest=2, beam=2), "it takes no --beam, --nbest"),
        (dict(sample="full", search="exhaustive"), "it takes no --beam, --nbest or --search"),
        (dict(sample="full", temperature=0.0), "--temperature must be > 0"),
        (dict(seed=3), "--temperature and --seed are for --sample"),
        (dict(temperature=0.5), "--temperature and --seed are for --sample"),
    ],
)
def test_sampling_options_are_checked(options, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        SearchOptions(**options)


def test_prefixes_and_samples_are_refused_where_they_cannot_hold(tiny_run):
    translator = Translator(tiny_run, device="cpu")
    with pytest.raises(UsageError, match="--prefix has more lines than the input"):
        list(translator.translations(["w1", "w2"], SearchOptions(), buffer=1, prefixes=["w1", "", "w3"]))
    with pytest.raises(UsageError, match="--prefix has 2 lines, fewer than the input"):
        list(translator.translations(["w1", "w2", "w3"], SearchOptions(), buffer=2, prefixes=["w1", ""]))
    with pytest.raises(UsageError, match="--prefix works with greedy, beam search and sampling"):
        translator.nbest(["w1"], SearchOptions(search="exhaustive", max_len_b=2), prefixes=["w1"])
    shortlisted = Translator(tiny_run, device="cpu", shortlist=5)
    with pytest.raises(UsageError, match="--prefix forces tokens that a shortlist may not hold"):
        shortlisted.nbest(["w1"], SearchOptions(), prefixes=["w1"])
    with pytest.raises(UsageError, match="--sample draws from the whole vocabulary"):
        shortlisted.nbest(["w1"], SearchOptions(sample="full"))
