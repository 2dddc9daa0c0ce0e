"""CUDA paths: training steps in bf16/fp16 with autocast and the gradient scaler, and search on
the GPU giving the CPU's results. Skipped where no GPU is present."""

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


def test_search_on_cuda_matches_cpu(reverse_data, tmp_path):
    run = tmp_path / "run"
    run_cli("train", "--data", reverse_data, "--out", run, "--attention", "luong", "--embed", "32",
            "--hidden", "32", "--layers", "1", "--max-steps", "40", "--valid-every", "40", "--device", "cpu")
    text = "w1 w2 w3\nw4 w5\nw6 w7 w8 w9\n"
    for beam in ("1", "5"):
        cpu = run_cli("translate", "--model", run, "--beam", beam, "--device", "cpu", input=text).stdout
        gpu = run_cli("translate", "--model", run, "--beam", beam, "--device", "cuda", input=text).stdout
        assert gpu == cpu
