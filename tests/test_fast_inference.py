"""Fast CPU inference: int8 layers, the vocabulary shortlist, the blocked top-k, the decoder's
one-step RNN and batch-parallel search keep what a search computes."""

import json

import pytest
import torch

from conftest import run_cli
from mtkit.config import ModelConfig
from mtkit.data.dataset import DataDir, EncodedSplit
from mtkit.data.vocab import EOS
from mtkit.decoding import SearchOptions, decode
from mtkit.evaluation import corpus_scores
from mtkit.models import quantize
from mtkit.models.output import row_topk
from mtkit.models.quantize import Int8Linear, quantize_int8
from mtkit.models.rnn import RNN
from mtkit.models.seq2seq import build_model
from mtkit.models.shortlist import Shortlist
from mtkit.translate import Translator

MODELS = [
    dict(attention="bahdanau", bidirectional=True, bridge="linear"),
    dict(attention="luong", cell="lstm", layers=2),
    dict(attention="none", layers=2),
]


def tiny(overrides, vocab=40, seed=0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(embed=16, hidden=24, dropout=0.0, **overrides), vocab, vocab)
    with torch.no_grad():
        model.generator.weight.mul_(3.0)
    return model.eval()


def sources(n=40, vocab=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, vocab, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist() for _ in range(n)]


@pytest.fixture(scope="module")
def bahdanau_run(reverse_data, tmp_path_factory):
    """The best recipe's model family, trained briefly on the reversal task."""
    out = tmp_path_factory.mktemp("runs") / "bahdanau"
    run_cli(
        "train", "--data", reverse_data, "--out", out, "--embed", "32", "--hidden", "64", "--layers", "1",
        "--attention", "bahdanau", "--bidirectional", "--bridge", "linear", "--lr", "0.01",
        "--batch-tokens", "2000", "--max-steps", "250", "--valid-every", "250", "--seed", "1",
    )
    return out


def test_int8_scores_within_0_3_bleu_of_fp32(bahdanau_run, reverse_data):
    evalset = DataDir(reverse_data).eval_set("test")
    scores = {}
    for precision, quantization in (("fp32", "none"), ("fp32", "int8"), ("bf16", "int8")):
        translator = Translator(bahdanau_run, precision=precision, quantize=quantization)
        for beam in (1, 5):
            outputs = translator.translate(evalset.sources, SearchOptions(beam=beam))
            scores[precision, quantization, beam] = corpus_scores(outputs, evalset.references).bleu
    for beam in (1, 5):
        fp32 = scores["fp32", "none", beam]
        assert fp32 > 50  # the model has learnt something worth keeping
        assert abs(scores["fp32", "int8", beam] - fp32) <= 0.3
        assert abs(scores["bf16", "int8", beam] - fp32) <= 0.3


@pytest.mark.parametrize("overrides", MODELS, ids=[m["attention"] for m in MODELS])
@pytest.mark.parametrize("beam", [1, 5])
def test_int8_results_do_not_depend_on_the_batch(overrides, beam):
    model = quantize_int8(tiny(overrides))
    srcs = sources()
    reference = [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam), batch_size=1)]
    for batch_size in (7, 64):
        assert [h[0].tokens for h in decode(model, srcs, SearchOptions(beam=beam), batch_size=batch_size)] == reference


@pytest.mark.parametrize("overrides", MODELS, ids=[m["attention"] for m in MODELS])
def test_int8_step_is_close_to_full_precision(overrides):
    model = tiny(overrides)
    src = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    lengths = torch.tensor([4, 3])
    tokens = torch.tensor([12, 13])
    with torch.inference_mode():
        memory, state = model.encode(src, lengths)
        expected, _, _ = model.step(tokens, memory, state)
        quantize_int8(model)
        memory, state = model.encode(src, lengths)
        log_probs, best, _, _ = model.step_top(tokens, memory, state, 3, [0, 2])
    torch.testing.assert_close(log_probs, expected.gather(1, best), atol=0.05, rtol=0)


def test_int8_linear_and_its_plain_pytorch_fallback(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(200, 300)
    x = torch.randn(33, 200)
    int8 = Int8Linear.from_linear(layer)
    fast = int8(x)
    assert (fast - layer(x)).abs().max() < 0.02 * layer(x).abs().max()
    monkeypatch.setattr(quantize, "has_int_mm", lambda: False)
    torch.testing.assert_close(int8(x), fast)  # the same integers, multiplied in fp32: exact here
    assert torch.cat(list(int8.forward_chunks(x, 5))).equal(fast)


def test_row_topk_is_torch_topk():
    torch.manual_seed(0)
    for width in (100, 8000, 17627):  # no blocks, whole blocks, a partial last block
        x = torch.randn(37, width)
        x[:, 5] = float("-inf")
        x[3, -1] = 100.0  # the maximum in the partial block
        for k in (1, 6, 10):
            values, index = row_topk(x, k)
            expected = x.topk(k, dim=1)
            assert values.equal(expected.values) and index.equal(expected.indices)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("impl", ["fused", "scratch"])
def test_one_rnn_step_is_a_one_token_forward(cell, impl):
    torch.manual_seed(0)
    rnn = RNN(cell, 12, 16, 2, 0.0, False, impl).eval()
    x = torch.randn(5, 12)
    h = torch.randn(2, 5, 16)
    state = (h, torch.randn(2, 5, 16)) if cell == "lstm" else h
    out, new = rnn.step(x, state)
    expected, expected_state = rnn(x[:, None], state=state)
    torch.testing.assert_close(out, expected[:, 0], atol=1e-6, rtol=0)
    for a, b in zip(new if cell == "lstm" else [new], expected_state if cell == "lstm" else [expected_state]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_search_threads_give_the_same_translations():
    model = quantize_int8(tiny(MODELS[0]))
    srcs = sources(100)
    threads = torch.get_num_threads()
    for beam in (1, 5):
        options = SearchOptions(beam=beam)
        one = decode(model, srcs, options, batch_size=16)
        assert [h[0].tokens for h in decode(model, srcs, options, batch_size=16, workers=3)] == [h[0].tokens for h in one]
        assert torch.get_num_threads() == threads  # restored after the threads ran one op each


def test_shortlist_ranks_by_dice_and_keeps_the_frequent_tokens():
    # source 5 always comes with target 9; target 8 is in every sentence (frequent, not specific)
    src = [[5, 6], [5, 7], [6, 7], [5], [7]]
    tgt = [[9, 8], [9, 8], [10, 8], [9, 8], [8]]
    shortlist = Shortlist.learn(EncodedSplit.from_lists(src, tgt), 12, 12, 1)
    assert shortlist.table[5, 0] == 9
    assert shortlist.table[6, 0] == 10  # Dice 2·1/(2+1) beats 8's 2·2/(2+5), though 8 co-occurs more
    assert shortlist.frequent.tolist() == [8]
    assert (shortlist.table[11] == EOS).all()  # never seen: nothing of its own


def test_search_with_a_shortlist_stays_in_each_sentences_list_and_batch():
    model = tiny(MODELS[0])
    srcs = sources(30)
    vocab = model.generator.out_features
    # a shortlist of the whole vocabulary changes nothing
    everything = torch.arange(vocab).expand(vocab, -1)
    model.shortlist = Shortlist(everything.clone(), torch.arange(4))
    for beam in (1, 4):
        with_list = decode(model, srcs, SearchOptions(beam=beam))
        model.shortlist = None
        without = decode(model, srcs, SearchOptions(beam=beam))
        model.shortlist = Shortlist(everything.clone(), torch.arange(4))
        assert [h[0].tokens for h in with_list] == [h[0].tokens for h in without]
        for a, b in zip(with_list, without):
            assert a[0].log_prob == pytest.approx(b[0].log_prob, abs=1e-4)
    # a restrictive one: each source token allows itself and the next token only
    table = torch.stack([torch.arange(vocab), (torch.arange(vocab) + 1) % vocab], dim=1)
    model.shortlist = Shortlist(table, torch.tensor([EOS]))
    for beam in (1, 4):
        results = decode(model, srcs, SearchOptions(beam=beam), batch_size=1)
        for src, hyps in zip(srcs, results):
            allowed = {t for s in src + [EOS] for t in (s, (s + 1) % vocab)}  # the source ends in <eos>
            assert set(hyps[0].tokens) <= allowed
        for batch_size in (7, 64):
            again = decode(model, srcs, SearchOptions(beam=beam), batch_size=batch_size)
            assert [h[0].tokens for h in again] == [h[0].tokens for h in results]


def test_translate_quantize_and_shortlist_options(bahdanau_run, reverse_data):
    text = "w1 w2 w3\nw4 w5 w6 w7\n"
    fp32 = run_cli("translate", "--model", bahdanau_run, input=text).stdout
    int8 = run_cli("translate", "--model", bahdanau_run, "--quantize", "int8", "--shortlist", "5",
                   "--shortlist-data", reverse_data, "--beam", "3", input=text).stdout
    assert len(int8.splitlines()) == 2 and int8.splitlines()[0] == fp32.splitlines()[0] == "w3 w2 w1"
    scores = json.loads(run_cli("evaluate", "--model", bahdanau_run, "--data", reverse_data, "--quantize", "int8", "--json").stdout)
    assert scores["bleu"] > 50
    bad = run_cli("translate", "--model", bahdanau_run, "--quantize", "int4", input=text, check=False)
    assert bad.returncode != 0 and "int4" in bad.stderr


@pytest.mark.parametrize("overrides", MODELS, ids=[m["attention"] for m in MODELS])
def test_reading_finished_sentences_every_few_steps_changes_nothing(monkeypatch, overrides):
    """On a GPU the searches look at which sentences have finished every 4th step only (each
    look waits for the device); on a CPU every step. The results must be the same."""
    from mtkit.decoding import beam, greedy

    model = tiny(overrides)
    srcs = sources(40)
    options = [SearchOptions(beam=1), SearchOptions(beam=4, nbest=3), SearchOptions(beam=5, max_len_b=3)]
    every_step = [decode(model, srcs, o, batch_size=16) for o in options]
    monkeypatch.setattr(greedy, "check_every", lambda device: 4)
    monkeypatch.setattr(beam, "check_every", lambda device: 4)
    for option, expected in zip(options, every_step):
        found = decode(model, srcs, option, batch_size=16)
        assert [[h.tokens for h in hyps] for hyps in found] == [[h.tokens for h in hyps] for hyps in expected]
        # the rows a batch holds differ from step to step, which moves scores in the last bits
        for hyps, reference in zip(found, expected):
            assert [h.score for h in hyps] == pytest.approx([h.score for h in reference], abs=1e-4)
