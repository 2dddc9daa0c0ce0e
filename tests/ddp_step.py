"""One training step's gradients and a validation's dev scores, saved by rank 0: run alone, or
under torchrun in two processes (tests/test_training.py compares the two).

    python tests/ddp_step.py DATA_DIR RUN_DIR OUT.pt

The step trains on two batches: alone, as one batch of both; in two processes, one batch each.
The dev scores are those of RUN_DIR's model, every process translating its slice of the dev set.
"""

import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

import mtkit.training.validation as validation
from mtkit.config import Recipe, set_option
from mtkit.data.batching import Update, make_batch
from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions
from mtkit.rundir import RunDir
from mtkit.training.distributed import gather_objects, init_distributed, shutdown
from mtkit.training.loop import Trainer
from mtkit.training.validation import DevSet

SETTINGS = {
    "model.embed": 16, "model.hidden": 16, "model.layers": 2, "model.dropout": 0.0,
    "train.label_smoothing": 0.1, "train.seed": 5,
    "train.clip_norm": 1e9,  # no clipping: the gradients as the loss made them
}


def gradients(data: DataDir, dist) -> dict[str, torch.Tensor]:
    recipe = Recipe()
    for dotted, value in SETTINGS.items():
        set_option(recipe, dotted, value)
    split = data.encoded("train")
    batches = [np.arange(0, 120, 3), np.arange(2, 200, 6)]  # 40 and 33 sentences of mixed lengths
    mine = [np.concatenate(batches)] if dist.world == 1 else [batches[dist.rank]]
    update = Update(0, 0, 2, 2, [make_batch(split, b) for b in mine], split.target_tokens(np.concatenate(batches)))
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, data, Path(run_dir), Console(quiet=True), dist)
        trainer.train_step(update, lr=0.0)
        trainer.reporter.close()
    return {name: p.grad for name, p in trainer.model.named_parameters()}


def dev_scores(data: DataDir, run_dir: str, dist) -> tuple[dict | None, list[int]]:
    """The scores (rank 0) and how many sentences each rank translated."""
    decoded, decode = [], validation.decode

    def counting(model, sources, *args, **kwargs):
        decoded.append(len(sources))
        return decode(model, sources, *args, **kwargs)

    validation.decode = counting
    model, _ = RunDir(run_dir).load_model()
    scores = DevSet(data, SearchOptions()).score(model, torch.device("cpu"), "fp32", dist)
    return (asdict(scores) if scores else None), gather_objects(sum(decoded), dist)


def main(data_dir: str, run_dir: str, out: str) -> None:
    dist = init_distributed("cpu")
    data = DataDir(data_dir)
    grads = gradients(data, dist)
    scores, decoded = dev_scores(data, run_dir, dist)
    if dist.is_main:
        torch.save({"grads": grads, "dev": scores, "decoded": decoded}, out)
    shutdown(dist)


if __name__ == "__main__":
    main(*sys.argv[1:])
