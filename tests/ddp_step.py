"""One training step's gradients, saved by rank 0: run alone, or under torchrun in several
processes (tests/test_training.py compares the two).

    python tests/ddp_step.py DATA_DIR OUT.pt
"""

import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console

from mtkit.config import Recipe, set_option
from mtkit.data.dataset import DataDir
from mtkit.training.distributed import init_distributed, shutdown
from mtkit.training.loop import Trainer

SETTINGS = {
    "model.embed": 16, "model.hidden": 16, "model.layers": 2, "model.dropout": 0.0,
    "train.label_smoothing": 0.1, "train.seed": 5,
    "train.clip_norm": 1e9,  # no clipping: the gradients as the loss made them
}


def main(data_dir: str, out: str) -> None:
    recipe = Recipe()
    for dotted, value in SETTINGS.items():
        set_option(recipe, dotted, value)
    dist = init_distributed("cpu")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, DataDir(data_dir), Path(run_dir), Console(quiet=True), dist)
        trainer.train_step(list(range(0, 120, 3)), lr=0.0)  # 40 sentences of mixed lengths
        trainer.reporter.close()
    if dist.is_main:
        torch.save({name: p.grad for name, p in trainer.model.named_parameters()}, out)
    shutdown(dist)


if __name__ == "__main__":
    main(*sys.argv[1:])
