"""CUDA paths: training steps in bf16/fp16 with autocast and the gradient scaler, batches made
ahead in pinned memory, and search on the GPU giving the CPU's results. Skipped where no GPU is
present."""

import math

import pytest
import torch

from conftest import run_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_on_cuda(reverse_data, tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run = tmp_path / "run"
    result = run_cli("train", "--data", reverse_data, "--out", run, "--device", "cuda", "--precision", precision,
                     "--attention", "luong", "--bidirectional", "--bridge", "linear", "--embed", "64",
                     "--hidden", "64", "--layers", "1", "--max-steps", "60", "--valid-every", "30", "--lr", "0.01")
    assert f"cuda {precision}" in result.stderr
    losses = [float(line.split("dev loss ")[1].split(" ")[0]) for line in (run / "train.log").read_text().splitlines() if "validation" in line]
    assert losses[-1] < losses[0]
    assert (run / "best.pt").is_file()


def test_batches_made_ahead_are_pinned_and_train_on_the_gpu(reverse_data, tmp_path):
    from rich.console import Console

    from mtkit.config import Recipe, set_option
    from mtkit.data.dataset import DataDir
    from mtkit.training.loop import Trainer

    recipe = Recipe()
    for dotted, value in {"model.embed": 16, "model.hidden": 16, "train.device": "cuda", "train.accumulate": 2}.items():
        set_option(recipe, dotted, value)
    trainer = Trainer(recipe, DataDir(reverse_data), tmp_path, Console(quiet=True))
    with trainer.prefetch() as updates:
        for _ in range(3):
            update = next(updates)
            assert len(update.batches) == 2 and all(b.src.is_pinned() and b.tgt_out.is_pinned() for b in update.batches)
            loss, tokens, _ = trainer.train_step(update, lr=1e-3)
            assert tokens == update.tokens and math.isfinite(loss)
    trainer.reporter.close()


def test_search_on_cuda_matches_cpu(reverse_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--attention", "luong", "--embed", "32",
            "--hidden", "32", "--layers", "1", "--max-steps", "40", "--valid-every", "40", "--device", "cpu")
    text = "w1 w2 w3\nw4 w5\nw6 w7 w8 w9\n"
    for beam in ("1", "5"):
        cpu = run_cli("translate", "--model", run, "--beam", beam, "--device", "cpu", input=text).stdout
        gpu = run_cli("translate", "--model", run, "--beam", beam, "--device", "cuda", input=text).stdout
        assert gpu == cpu


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_bf16_never_runs_the_recurrent_layers_in_fp16(cell):
    """PyTorch's autocast casts cuDNN's RNNs to fp16 whatever dtype it was given: under bf16
    they would train in fp16 without a gradient scaler. Every module's output is checked."""
    from mtkit.config import ModelConfig
    from mtkit.models.rnn import RNN
    from mtkit.models.seq2seq import build_model

    rnn = RNN(cell, 8, 16, 2, 0.0, True, "fused").cuda()
    x = torch.randn(3, 5, 8, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        for lengths in (None, torch.tensor([5, 3, 2])):
            out, final = rnn(x, lengths)
            for tensor in (out, *(final if cell == "lstm" else (final,))):
                assert tensor.dtype != torch.float16
    for attention in ("none", "luong", "bahdanau"):
        model = build_model(ModelConfig(cell=cell, embed=16, hidden=32, layers=2, attention=attention), 50, 60).cuda()
        seen = set()

        def record(module, inputs, output):
            for t in output if isinstance(output, tuple) else (output,):
                for leaf in t if isinstance(t, tuple) else (t,):
                    if isinstance(leaf, torch.Tensor):
                        seen.add((type(module).__name__, leaf.dtype))

        handles = [m.register_forward_hook(record) for m in model.modules()]
        src = torch.randint(4, 50, (4, 7), device="cuda")
        tgt = torch.randint(4, 60, (4, 6), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, _ = model(src, torch.tensor([7, 6, 3, 1]), tgt, tgt)
        loss.backward()
        for handle in handles:
            handle.remove()
        assert not [name for name, dtype in seen if dtype == torch.float16], (attention, sorted(map(str, seen)))
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_auto_precision_matches_the_gpus_native_bf16():
    from mtkit.device import resolve_precision

    native = torch.cuda.get_device_capability() >= (8, 0)
    assert resolve_precision("auto", torch.device("cuda")) == ("bf16" if native else "fp32")
