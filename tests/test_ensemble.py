"""Ensembles: the search over the mean of several models' log-probabilities, each model reading
the source through its own tokeniser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import cli_error, run_cli, train_tiny
from mtkit.checkpoint import load_checkpoint, save_checkpoint
from mtkit.config import ModelConfig
from mtkit.decoding import SearchOptions, decode
from mtkit.decoding.ensemble import Ensemble
from mtkit.errors import UsageError
from mtkit.models.seq2seq import build_model
from mtkit.translate import Translator, translate_split
from test_search import ATTENTIONS, sources, teacher_forced_log_prob, tiny_model

SEARCHES = {"greedy": SearchOptions(beam=1), "beam": SearchOptions(beam=4, nbest=4)}


def found(results):
    return [[(h.tokens, h.log_prob, h.score) for h in hyps] for hyps in results]


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("search", SEARCHES)
def test_an_ensemble_of_one_is_the_model(attention, search):
    model = tiny_model(attention, cell="lstm" if attention == "luong" else "gru")
    srcs = sources(30)
    alone = decode(model, srcs, SEARCHES[search])
    assert found(decode(Ensemble([model]), [(s,) for s in srcs], SEARCHES[search])) == found(alone)


def two_models():
    """Two models with one target vocabulary (9) and different source vocabularies (9 and 13),
    and sources as each reads them."""
    torch.manual_seed(4)
    config = ModelConfig(embed=8, hidden=16, dropout=0.0, attention="bahdanau")
    first = build_model(config, 9, 9)
    second = build_model(ModelConfig(embed=8, hidden=12, dropout=0.0, cell="lstm", attention="luong", bidirectional=False, bridge="last"), 13, 9)
    for model in (first, second):
        with torch.no_grad():
            model.generator.weight.mul_(3.0)
    g = torch.Generator().manual_seed(5)
    srcs = []
    for _ in range(40):
        length = int(torch.randint(1, 7, (1,), generator=g))
        srcs.append((torch.randint(4, 9, (length,), generator=g).tolist(), torch.randint(4, 13, (length + 2,), generator=g).tolist()))
    return Ensemble([first.eval(), second.eval()]), srcs


@pytest.mark.parametrize("search", SEARCHES)
def test_a_two_model_ensemble_does_not_depend_on_the_batch(search):
    """The same outputs in any batch (scores to rounding: a matrix product of another height
    may round its last bits differently, as for one model)."""
    ensemble, srcs = two_models()
    reference = decode(ensemble, srcs, SEARCHES[search], batch_size=1)
    for batch_size, workers in ((7, 1), (64, 1), (64, 2)):
        results = decode(ensemble, srcs, SEARCHES[search], batch_size=batch_size, workers=workers)
        assert [[h.tokens for h in hyps] for hyps in results] == [[h.tokens for h in hyps] for hyps in reference]
        scores = [h.log_prob for hyps in results for h in hyps]
        assert scores == pytest.approx([h.log_prob for hyps in reference for h in hyps], abs=1e-5)


def test_ensemble_scores_are_the_mean_of_the_models_log_probabilities():
    ensemble, srcs = two_models()
    for src, hyps in zip(srcs, decode(ensemble, srcs, SearchOptions(beam=3, nbest=3))):
        for hyp in hyps:
            per_model = [teacher_forced_log_prob(m, s, hyp.tokens) for m, s in zip(ensemble.members, src)]
            assert hyp.log_prob == pytest.approx(sum(per_model) / 2, abs=1e-4)


# -- through the CLI ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def second_run(reverse_data, tmp_path_factory) -> Path:
    """tiny_run's settings with another seed: another model, the same vocabularies."""
    return train_tiny(reverse_data, tmp_path_factory.mktemp("ensemble") / "seed2", seed=2)


def copy_run(run: Path, target: Path) -> Path:
    target.mkdir()
    for item in run.iterdir():
        if item.is_file():
            (target / item.name).write_bytes(item.read_bytes())
    return target


def with_permuted_source_vocabulary(run: Path, target: Path) -> Path:
    """The same model reading its source through another numbering of the source words: its
    vocabulary file and the rows of its source embeddings reordered alike."""
    copy_run(run, target)
    tokens = (run / "vocab.en.txt").read_text(encoding="utf-8").splitlines()
    order = list(range(4)) + list(range(len(tokens) - 1, 3, -1))  # the specials stay first
    (target / "vocab.en.txt").write_text("".join(tokens[i] + "\n" for i in order), encoding="utf-8")
    checkpoint = load_checkpoint(run / "best.pt")
    embedding = checkpoint["model"]["encoder.embedding.weight"]
    checkpoint["model"]["encoder.embedding.weight"] = embedding[torch.tensor(order)]
    save_checkpoint(target / "best.pt", checkpoint)
    return target


def test_each_model_tokenises_the_source_its_own_way(tiny_run, tmp_path):
    """An ensemble of a model and the same model under another source numbering (exported to a
    file) is that model: were the sources tokenised once for both, the second would read the
    wrong words."""
    permuted = with_permuted_source_vocabulary(tiny_run, tmp_path / "permuted")
    run_cli("export", permuted, "-o", tmp_path / "permuted.mtkit")
    source = tmp_path / "input.txt"
    source.write_text("w1 w2 w3\nw4 w5 w6 w7\n\nw9 w8 w19 w0\n", encoding="utf-8")
    flags = ["--beam", "3", "--nbest", "3", "--format", "jsonl"]
    alone = run_cli("translate", "--model", tiny_run, source, *flags).stdout
    assert run_cli("translate", "--model", tiny_run, "--model", tmp_path / "permuted.mtkit", source, *flags).stdout == alone
    # The permuted model given the first model's ids reads other words: it translates otherwise.
    misread = copy_run(permuted, tmp_path / "misread")
    (misread / "vocab.en.txt").write_bytes((tiny_run / "vocab.en.txt").read_bytes())
    assert run_cli("translate", "--model", misread, source, *flags).stdout != alone


def test_evaluate_an_ensemble(tiny_run, second_run, reverse_data):
    def bleu(*models):
        args = [arg for model in models for arg in ("--model", model)]
        return json.loads(run_cli("evaluate", *args, "--data", reverse_data, "--beam", "3", "--json").stdout)["bleu"]

    assert bleu(tiny_run, second_run) > 0
    # An ensemble of a model with itself is the model (the mean of two equal log-probabilities).
    alone, _ = translate_split(tiny_run, reverse_data, "test", beam=3, device="cpu")
    assert translate_split([tiny_run, tiny_run], reverse_data, "test", beam=3, device="cpu")[0] == alone


def test_an_ensemble_needs_one_target_vocabulary(tiny_run, second_run, tmp_path):
    other = copy_run(second_run, tmp_path / "other")
    tokens = (other / "vocab.fr.txt").read_text(encoding="utf-8").splitlines()
    tokens[5], tokens[6] = tokens[6], tokens[5]
    (other / "vocab.fr.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    message = cli_error("translate", "--model", tiny_run, "--model", other, "-o", tmp_path / "out.txt", input="w1\n", status=2)
    assert "an ensemble needs one target vocabulary" in message
    assert str(tiny_run) in message and str(other) in message and f"token 5 is {tokens[6]!r} in one" in message
    assert not (tmp_path / "out.txt").exists()
    assert "one model's attention" in cli_error("translate", "--model", tiny_run, "--model", second_run, "--show-attention", status=2)
    with pytest.raises(UsageError, match="--shortlist is for one model"):
        Translator([tiny_run, second_run], shortlist=5, device="cpu")
