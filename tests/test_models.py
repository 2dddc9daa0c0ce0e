import pytest
import torch

from mtkit.config import ModelConfig
from mtkit.data.vocab import PAD
from mtkit.models.rnn import RNN
from mtkit.models.seq2seq import build_model
from mtkit.models.output import sequence_loss


def padded_batch(seed=0, vocab=30, lengths=(7, 4, 1, 6)):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, vocab, (len(lengths), max(lengths)), generator=g)
    for row, n in enumerate(lengths):
        src[row, n:] = PAD
    return src, torch.tensor(lengths)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_scratch_equals_fused(cell, bidirectional):
    torch.manual_seed(0)
    fused = RNN(cell, 5, 7, 3, 0.0, bidirectional, "fused")
    scratch = RNN(cell, 5, 7, 3, 0.0, bidirectional, "scratch")
    scratch.net.load_state_dict(fused.net.state_dict())
    x = torch.randn(4, 6, 5)
    lengths = torch.tensor([6, 3, 1, 5])
    results = []
    for rnn in (fused, scratch):
        xi = x.clone().requires_grad_()
        out, final = rnn(xi, lengths)
        h = final[0] if cell == "lstm" else final
        c = final[1] if cell == "lstm" else torch.zeros(())
        (out.pow(2).sum() + h.sin().sum() + c.cos().sum()).backward()
        results.append((out, h, c, xi.grad, [p.grad for p in rnn.parameters()]))
    (o1, h1, c1, gx1, gp1), (o2, h2, c2, gx2, gp2) = results
    torch.testing.assert_close(o1, o2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h1, h2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c1, c2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    for a, b in zip(gp1, gp2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


# The chapter's architecture (2 layers, unidirectional, state handed over, fixed context), and
# variations of it.
BOOK = dict(layers=2, bidirectional=False, bridge="last", attention="none")
CONFIGS = [
    dict(),
    dict(cell="lstm", layers=3),
    dict(bidirectional=True, bridge="linear", layers=1),
    dict(cell="lstm", bidirectional=True, bridge="linear", decoder_layers=3, attention="luong"),
    dict(attention="bahdanau", bridge="zero"),
    dict(attention="luong", context_input=True, attention_score="dot"),
    dict(impl="scratch", attention="luong", bidirectional=True, bridge="linear"),
]


@pytest.mark.parametrize("overrides", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_padding_never_changes_results(overrides):
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=16, hidden=24, dropout=0.0, **{**BOOK, **overrides}), 30, 40).eval()
    src, lengths = padded_batch()
    tgt_in = torch.randint(4, 40, (4, 5))
    together = model(src, lengths, tgt_in)
    for row, n in enumerate(lengths.tolist()):
        alone = model(src[row : row + 1, :n], lengths[row : row + 1], tgt_in[row : row + 1])
        torch.testing.assert_close(together[row : row + 1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("overrides", CONFIGS, ids=[str(c) for c in CONFIGS])
def test_state_shapes(overrides):
    config = ModelConfig(embed=16, hidden=24, dropout=0.0, **{**BOOK, **overrides})
    model = build_model(config, 30, 40).eval()
    src, lengths = padded_batch()
    memory, state = model.encode(src, lengths)
    dirs = 2 if config.bidirectional else 1
    assert memory.outputs.shape == (4, src.size(1), dirs * 24)
    assert memory.context.shape == (4, dirs * 24)
    expected = (config.decoder_layers or config.layers, 4, 24)
    for s in state if config.cell == "lstm" else (state,):
        assert s.shape == expected
    log_probs, _, _ = model.step(torch.full((4,), 2), memory, state)
    assert log_probs.shape == (4, 40)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(4))


def test_last_bridge_refuses_mismatched_sizes():
    from mtkit.errors import UsageError

    with pytest.raises(UsageError, match="bridge 'last'"):
        build_model(ModelConfig(bidirectional=True, bridge="last"), 10, 10)
    with pytest.raises(UsageError, match="tied embeddings"):
        build_model(ModelConfig(embed=8, hidden=16, tie_embeddings=True), 10, 10)


@pytest.mark.parametrize("attention", ["luong", "bahdanau"])
def test_attention_weights_sum_to_one_and_skip_padding(attention):
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=16, hidden=24, attention=attention), 30, 40).eval()
    src, lengths = padded_batch()
    memory, state = model.encode(src, lengths)
    _, _, weights = model.step(torch.full((4,), 2), memory, state)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4))
    assert (weights[src == PAD] == 0).all()
    assert (weights[src != PAD] > 0).all()


def test_loss_ignores_padding_and_counts_eos():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=16, hidden=24, dropout=0.0), 30, 40)
    features = torch.randn(2, 4, 24)
    targets = torch.tensor([[5, 6, 3, PAD], [7, 3, PAD, PAD]])
    loss, n = sequence_loss(features, model.generator, targets)
    changed = features.clone()
    changed[targets == PAD] = 100.0  # whatever sits at padded positions
    loss2, _ = sequence_loss(changed, model.generator, targets)
    assert n == 5
    torch.testing.assert_close(loss, loss2)
    expected = torch.nn.functional.cross_entropy(model.generator(features[targets != PAD]), targets[targets != PAD], reduction="sum")
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_fused_cross_entropy_matches_pytorch(smoothing):
    from mtkit.models.output import LinearCrossEntropy

    torch.manual_seed(0)
    x = torch.randn(300, 16, requires_grad=True)
    layer = torch.nn.Linear(16, 5000)
    y = torch.randint(0, 5000, (300,))
    ours = LinearCrossEntropy.apply(x, layer.weight, layer.bias, y, smoothing)
    (ours * 0.3).backward()
    grads = [x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone()]
    x.grad = layer.weight.grad = layer.bias.grad = None
    ref = torch.nn.functional.cross_entropy(layer(x), y, reduction="sum", label_smoothing=smoothing)
    (ref * 0.3).backward()
    torch.testing.assert_close(ours, ref)
    for a, b in zip(grads, [x.grad, layer.weight.grad, layer.bias.grad]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_embeddings_are_not_xavier_initialised():
    model = build_model(ModelConfig(), 1000, 1000)
    std = model.encoder.embedding.weight.std().item()
    assert 0.8 < std < 1.2  # N(0, 1), the book's default; Xavier would give ~0.04


def test_tied_embeddings_share_one_matrix_through_training_and_loading():
    torch.manual_seed(0)
    config = ModelConfig(embed=24, hidden=24, layers=1, attention="luong", tie_embeddings=True)
    model = build_model(config, 30, 40)
    assert model.generator.weight is model.decoder.embedding.weight
    untied = build_model(ModelConfig(embed=24, hidden=24, layers=1, attention="luong"), 30, 40)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in untied.parameters()) - 40 * 24
    src, lengths = padded_batch()
    tgt = torch.randint(4, 40, (4, 5))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loss, n = model(src, lengths, tgt, tgt)
    (loss / n).backward()
    optimizer.step()
    reloaded = build_model(config, 30, 40)
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.generator.weight is reloaded.decoder.embedding.weight
    torch.testing.assert_close(reloaded.generator.weight, model.decoder.embedding.weight)


def test_fp16_output_layer_gradients_are_scaled_before_fp16_can_lose_them():
    """Under fp16 the probabilities of unlikely tokens (here about 1e-9) are below fp16's
    smallest number; multiplied by the loss scale first (as an unfused layer under a gradient
    scaler sees them) they survive into the gradient."""
    from mtkit.models.output import LinearCrossEntropy

    torch.manual_seed(0)
    x = torch.randn(32, 16)
    layer = torch.nn.Linear(16, 40)
    with torch.no_grad():
        layer.bias[20:] = -20.0  # p ≈ e^-20 ≈ 2e-9 for tokens 20..39
    y = torch.randint(0, 20, (32,))
    scale = 2.0**13  # the loss scale; the largest gradients stay within fp16
    ref_x = x.double().requires_grad_()
    ref_w, ref_b = layer.weight.double().detach().requires_grad_(), layer.bias.double().detach().requires_grad_()
    (torch.nn.functional.cross_entropy(ref_x @ ref_w.t() + ref_b, y, reduction="sum") * scale).backward()
    xi = x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = LinearCrossEntropy.apply(xi, layer.weight, layer.bias, y, 0.0)
    (loss * scale).backward()
    rare, expected = layer.weight.grad[20:].double(), ref_w.grad[20:]
    # all zero when the probabilities are stored in fp16 before the scale multiplies them
    assert (rare - expected).norm() < 0.02 * expected.norm()
    torch.testing.assert_close(layer.bias.grad.double(), ref_b.grad, rtol=0.01, atol=1e-3)
    assert (xi.grad.double() - ref_x.grad).norm() < 0.01 * ref_x.grad.norm()


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_precision_is_bf16_only_where_the_gpu_has_it_natively(monkeypatch, capability, expected):
    from mtkit.device import resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)  # emulated counts too
    assert resolve_precision("auto", torch.device("cuda")) == expected
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
