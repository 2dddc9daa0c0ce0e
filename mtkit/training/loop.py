"""The training loop: batches in, gradients out, validation and checkpoints along the way.

No framework sits between the loop and the tensors: a step is forward, masked loss, backward,
global-norm clipping, Adam. Validation (dev loss, dev BLEU and chrF) runs every epoch or every
``valid_every`` steps; ``best.pt`` keeps the best model by ``stop_on``, ``last.pt`` the whole
state (model, optimiser, schedule, RNG, position in the epoch), so a resumed CPU run continues
bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from mtkit import __version__
from mtkit.config import Recipe, TrainConfig, set_option
from mtkit.data.batching import bucket_batches, make_batch
from mtkit.data.dataset import DataDir
from mtkit.decoding import SearchOptions, decode
from mtkit.device import autocast, keep_freed_memory, resolve_device, resolve_precision
from mtkit.errors import Interrupted, MtkitError, UsageError
from mtkit.evaluation import corpus_bleu_chrf
from mtkit.fileio import prepare_output_dir, write_json
from mtkit.models.seq2seq import build_model, count_parameters
from mtkit.rundir import RunDir, write_run_config
from mtkit.training.checkpoint import load_checkpoint, numbered_checkpoints, save_checkpoint
from mtkit.training.distributed import Distributed, all_sum, barrier, gather_objects, init_distributed, shutdown
from mtkit.training.progress import Reporter
from mtkit.training.schedules import Schedule

LIMITS = ("max_steps", "max_epochs", "max_time")


@dataclass
class Validation:
    step: int
    epoch: int
    elapsed: float
    target_tokens: int  # trained on so far
    train_loss: float
    dev_loss: float
    dev_bleu: float
    dev_chrf: float
    lr: float
    tokens_per_second: float
    padding: float


class Trainer:
    """The model, optimiser, schedule, data and progress of one run."""

    def __init__(
        self, recipe: Recipe, data: DataDir, run_dir: Path, console: Console,
        dist: Distributed = Distributed(), state: dict[str, Any] | None = None,
    ) -> None:
        self.recipe, self.data, self.run_dir, self.dist = recipe, data, run_dir, dist
        self.cfg = cfg = recipe.train
        keep_freed_memory()
        device = resolve_device(cfg.device)
        if device.type == "cuda" and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.precision = resolve_precision(cfg.precision, device)
        torch.manual_seed(cfg.seed)
        self.src_proc, self.tgt_proc = data.processor("src"), data.processor("tgt")
        self.model = build_model(
            recipe.model, len(self.src_proc.tokenizer.vocab), len(self.tgt_proc.tokenizer.vocab)
        ).to(device)
        # Same initial weights everywhere (DDP also broadcasts them); dropout differs per rank.
        torch.manual_seed(cfg.seed + dist.rank)
        self.network = (
            DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
            if dist.enabled else self.model
        )
        # The fused kernel updates all parameters in one pass over memory, on CPUs too.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.schedule = Schedule(cfg.schedule, cfg.warmup, cfg.plateau_factor, cfg.plateau_patience)
        self.train_split = data.encoded("train")
        self.dev_split = data.encoded("dev")
        self.dev_set = data.eval_set("dev")
        first_of_group = torch.ones(len(self.dev_split), dtype=torch.bool)
        first_of_group[1:] = self.dev_split.groups[1:] != self.dev_split.groups[:-1]
        self.dev_sources = [self.dev_split.src(int(i)).tolist() for i in first_of_group.nonzero().squeeze(1)]
        target_lengths = self.train_split.tgt_lengths + 1  # + <eos>
        self.target_counts = target_lengths.clamp(max=cfg.truncate) if cfg.truncate else target_lengths
        self.step = self.epoch = self.batch_in_epoch = 0
        self.elapsed = 0.0
        self.target_tokens = 0
        self.best_score = -math.inf  # the stop_on metric, negated for loss
        self.bad_validations = 0
        self.interrupted = 0
        self.interrupted_at = 0.0
        self.window = _new_window()
        self.reporter = Reporter(console, run_dir / "train.log", enabled=dist.is_main)
        if state is not None:
            self.restore(state)

    # -- limits ----------------------------------------------------------------------------

    def progress(self, batches_in_epoch: int) -> float:
        """Fraction of the budget used: the largest of the steps, time and epoch fractions."""
        fractions = [0.0]
        if self.cfg.max_steps:
            fractions.append(self.step / self.cfg.max_steps)
        if self.cfg.max_time:
            fractions.append(self.elapsed / self.cfg.max_time)
        if self.cfg.max_epochs:
            fractions.append((self.epoch + self.batch_in_epoch / max(1, batches_in_epoch)) / self.cfg.max_epochs)
        return min(1.0, max(fractions))

    def limit_reached(self) -> bool:
        cfg = self.cfg
        return bool(
            (cfg.max_steps and self.step >= cfg.max_steps)
            or (cfg.max_time and self.elapsed >= cfg.max_time)
            or (cfg.max_epochs and self.epoch >= cfg.max_epochs)
        )

    # -- one update ------------------------------------------------------------------------

    def train_step(self, indices: list[int], lr: float) -> tuple[float, int, int]:
        """One update on a global batch; this rank trains on its slice of the sentences."""
        self.network.train()
        local = indices[self.dist.rank :: self.dist.world]
        batch = make_batch(self.train_split, local, self.cfg.truncate).to(self.device)
        global_tokens = int(self.target_counts[indices].sum())
        with autocast(self.device, self.precision):
            loss_sum, n_tokens = self.network(
                batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, self.cfg.label_smoothing
            )
        # DDP averages gradients over ranks, so scale by world/global tokens: the update is
        # exactly that of the mean loss over all the batch's tokens.
        loss = loss_sum * (self.dist.world / global_tokens)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss_sum.detach()), n_tokens, batch.tgt_out.numel()

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> list[Validation]:
        cfg = self.cfg
        self.reporter.log(
            f"{'resuming at step ' + str(self.step) if self.step else 'training'}: "
            f"{count_parameters(self.model):,} parameters, {len(self.train_split):,} pairs, "
            f"{self.device.type} {self.precision}"
            + (f", {self.dist.world} processes" if self.dist.enabled else "")
        )
        history: list[Validation] = []
        restore_signals = self._catch_signals()
        clock = time.perf_counter() - self.elapsed
        last_validated = self.step if self.step else -1
        stop = self.limit_reached()
        try:
            self.reporter.start(self.progress(1))
            while not stop:
                batches = bucket_batches(
                    self.train_split.src_lengths, self.train_split.tgt_lengths, cfg.batch_tokens,
                    cfg.batch_size, cfg.seed, self.epoch, cfg.truncate, min_sentences=self.dist.world,
                )
                if not batches:
                    raise MtkitError(f"{self.data.path}: the training split is empty")
                if self.batch_in_epoch >= len(batches):  # resumed with another --nproc: next epoch
                    self.epoch, self.batch_in_epoch = self.epoch + 1, 0
                    stop = self.limit_reached()
                    continue
                for indices in batches[self.batch_in_epoch :]:
                    lr = cfg.lr * self.schedule.factor(self.step + 1, self.progress(len(batches)))
                    started = time.perf_counter()
                    loss, n_tokens, padded = self.train_step(indices, lr)
                    self.batch_in_epoch += 1
                    self.step += 1
                    epoch_done = self.batch_in_epoch == len(batches)
                    if epoch_done:
                        self.epoch += 1
                        self.batch_in_epoch = 0
                    # One message agrees on the batch's totals, rank 0's clock and signals.
                    loss, n_tokens, padded, elapsed, signalled = all_sum(
                        [loss, n_tokens, padded, time.perf_counter() - clock if self.dist.is_main else 0.0,
                         float(bool(self.interrupted))],
                        self.dist, self.device,
                    )
                    self.elapsed = elapsed
                    self._account(loss, int(n_tokens), int(padded), time.perf_counter() - started)
                    self.reporter.update(self.step, self.progress(len(batches)), self.window)
                    if self.step % cfg.log_every == 0:
                        self.reporter.log_step(self.step, self.epoch, self.window, lr, self.elapsed)
                    stop = self.limit_reached()
                    if (cfg.valid_every and self.step % cfg.valid_every == 0) or (epoch_done and not cfg.valid_every):
                        result, early_stop = self.validate(lr)
                        history.append(result)
                        last_validated = self.step
                        if early_stop:
                            self.reporter.log(f"early stopping: no better dev {cfg.stop_on} for {cfg.patience} validations")
                            return history
                    elif cfg.save_every and self.step % cfg.save_every == 0 and not signalled:
                        self.save_last()
                    if signalled:  # after a validation due at this step, so a resume misses nothing
                        self._stop_on_signal()
                    if stop:
                        break
            if last_validated != self.step:
                history.append(self.validate(lr)[0])
            return history
        finally:
            restore_signals()
            self.reporter.close()

    def _account(self, loss: float, n_tokens: int, padded: int, seconds: float) -> None:
        self.target_tokens += n_tokens
        window = self.window
        window["loss"] += loss
        window["tokens"] += n_tokens
        window["padded"] += padded
        window["time"] += seconds

    # -- signals ---------------------------------------------------------------------------

    def _catch_signals(self):
        """SIGINT/SIGTERM finish the current step, save, and stop (see _stop_on_signal); a second
        one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handler(signum, _frame) -> None:
            # A second signal stops at once, without saving; one within a few seconds of the
            # first is ignored (torchrun forwards the terminal's Ctrl-C as a second signal).
            if self.interrupted and time.monotonic() - self.interrupted_at > 5:
                raise KeyboardInterrupt
            if not self.interrupted:
                self.interrupted, self.interrupted_at = signum, time.monotonic()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, old) for sig, old in previous.items()]

    def _stop_on_signal(self) -> None:
        self.save_last()
        name = "SIGTERM" if self.interrupted == signal.SIGTERM else "SIGINT"
        message = (
            f"stopped by {name} at step {self.step} (epoch {self.epoch}); state saved in "
            f"{self.run_dir / 'last.pt'}. Resume with: mtkit train --resume {self.run_dir}"
        )
        self.reporter.log(message)
        raise Interrupted(message, 143 if name == "SIGTERM" else 130)

    # -- validation ------------------------------------------------------------------------

    @torch.no_grad()
    def dev_loss(self) -> float:
        self.model.eval()
        total, tokens = 0.0, 0
        for indices in bucket_batches(self.dev_split.src_lengths, self.dev_split.tgt_lengths, batch_tokens=4000):
            batch = make_batch(self.dev_split, indices).to(self.device)
            with autocast(self.device, self.precision):
                loss, n = self.model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            total, tokens = total + float(loss), tokens + n
        return total / max(1, tokens)

    def validate(self, lr: float) -> tuple[Validation, bool]:
        """Score the dev set (rank 0), save checkpoints; return the result and whether to stop."""
        window = self.window
        result = Validation(
            step=self.step, epoch=self.epoch, elapsed=round(self.elapsed, 1), target_tokens=self.target_tokens,
            train_loss=window["loss"] / window["tokens"] if window["tokens"] else math.nan,
            dev_loss=math.nan, dev_bleu=math.nan, dev_chrf=math.nan, lr=lr,
            tokens_per_second=window["tokens"] / window["time"] if window["time"] else 0.0,
            padding=1 - window["tokens"] / window["padded"] if window["padded"] else 0.0,
        )
        self.window = _new_window()
        improved = False
        if self.dist.is_main:
            options = SearchOptions(beam=self.cfg.valid_beam)
            with autocast(self.device, self.precision):
                hyps = decode(self.model, self.dev_sources, options, device=self.device)
            outputs = [self.tgt_proc.decode(nbest[0].tokens) for nbest in hyps]
            result.dev_bleu, result.dev_chrf = corpus_bleu_chrf(outputs, self.dev_set.references)
            result.dev_loss = self.dev_loss()
            metric = {"bleu": result.dev_bleu, "chrf": result.dev_chrf, "loss": -result.dev_loss}[self.cfg.stop_on]
            improved = metric > self.best_score
            if improved:
                self.best_score = metric
        # Rank 0 decides; every rank updates the same schedule and early-stopping state.
        improved = bool(all_sum([float(improved)], self.dist, self.device)[0])
        self.bad_validations = 0 if improved else self.bad_validations + 1
        self.schedule.on_validation(improved)
        stop = bool(self.cfg.patience and self.bad_validations >= self.cfg.patience)
        self.save_last(best=improved)
        if self.dist.is_main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(asdict(result)) + "\n")
            self.reporter.log_validation(result, improved)
        return result, stop

    # -- checkpoints -----------------------------------------------------------------------

    def progress_state(self) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "elapsed": self.elapsed, "target_tokens": self.target_tokens, "best_score": self.best_score,
            "bad_validations": self.bad_validations,
        }

    def save_last(self, best: bool = False) -> None:
        """last.pt (everything to resume), best.pt and a numbered copy for averaging. Every rank
        calls this (each contributes its random state); rank 0 writes."""
        rng = {"torch": gather_objects(torch.get_rng_state(), self.dist)}
        if self.device.type == "cuda":
            rng["cuda"] = gather_objects(torch.cuda.get_rng_state(self.device), self.dist)
        if not self.dist.is_main:
            return
        model = self.model.state_dict()
        meta = {"mtkit_version": __version__}
        save_checkpoint(
            self.run_dir / "last.pt",
            {
                "model": model, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "schedule": self.schedule.state_dict(), "progress": self.progress_state(), "rng": rng, "meta": meta,
            },
        )
        light = {"model": model, "progress": self.progress_state(), "meta": meta}
        if best:
            save_checkpoint(self.run_dir / "best.pt", light)
        if self.cfg.keep_checkpoints:
            save_checkpoint(self.run_dir / f"step-{self.step}.pt", light)
            for old in numbered_checkpoints(self.run_dir)[: -self.cfg.keep_checkpoints]:
                old.unlink()

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        progress = state["progress"]
        self.step, self.epoch = int(progress["step"]), int(progress["epoch"])
        self.batch_in_epoch, self.elapsed = int(progress["batch_in_epoch"]), float(progress["elapsed"])
        self.target_tokens = int(progress["target_tokens"])
        self.best_score, self.bad_validations = float(progress["best_score"]), int(progress["bad_validations"])
        rank, torch_states = self.dist.rank, state["rng"]["torch"]
        if rank < len(torch_states):
            torch.set_rng_state(torch_states[rank])
            if "cuda" in state["rng"] and self.device.type == "cuda":
                torch.cuda.set_rng_state(state["rng"]["cuda"][rank], self.device)
        else:  # resumed with more processes than saved states
            torch.manual_seed(self.cfg.seed + rank + 1_000_003 * self.step)


def _new_window() -> dict[str, float]:
    return {"loss": 0.0, "tokens": 0, "padded": 0, "time": 0.0}


def check_limits(cfg: TrainConfig) -> None:
    """Settle what a run needs before it starts: a batch size and at least one limit
    (10 epochs when none is given, recorded in config.json)."""
    if cfg.batch_tokens is None and cfg.batch_size is None:
        raise UsageError("set train.batch_tokens or train.batch_size")
    if not any(getattr(cfg, limit) for limit in LIMITS):
        cfg.max_epochs = 10


def train(
    recipe: Recipe, data_dir: str | Path, run_dir: str | Path, force: bool = False,
    console: Console | None = None,
) -> list[Validation]:
    """Train a new model on ``data_dir`` into a fresh ``run_dir``."""
    check_limits(recipe.train)
    dist = init_distributed(resolve_device(recipe.train.device).type)
    try:
        data = DataDir(data_dir)
        build_model(recipe.model, 8, 8)  # refuse an impossible model before creating anything
        run_dir = Path(run_dir)
        if dist.is_main:
            prepare_output_dir(run_dir, force, "run directory")
            write_run_config(run_dir, recipe, data)
        barrier(dist)
        return Trainer(recipe, data, run_dir, console or Console(stderr=True), dist).run()
    finally:
        shutdown(dist)


def resume(run_dir: str | Path, limits: dict[str, Any], console: Console | None = None) -> list[Validation]:
    """Continue a run from its ``last.pt`` with its saved configuration, ``limits`` raised."""
    run = RunDir(run_dir)
    recipe = run.recipe
    for key, value in limits.items():
        if value is not None:
            set_option(recipe, f"train.{key}", value)
    check_limits(recipe.train)
    dist = init_distributed(resolve_device(recipe.train.device).type)
    try:
        state = load_checkpoint(run.path / "last.pt")
        data = DataDir(run.raw["data_dir"])
        if dist.is_main:
            write_json(run.path / "config.json", {**run.raw, "train": asdict(recipe.train)})
        trainer = Trainer(recipe, data, run.path, console or Console(stderr=True), dist, state)
        if trainer.limit_reached():
            raise MtkitError(
                f"{run.path} already reached its limit at step {trainer.step}; raise "
                "--max-steps, --max-epochs or --max-time to continue"
            )
        return trainer.run()
    finally:
        shutdown(dist)
