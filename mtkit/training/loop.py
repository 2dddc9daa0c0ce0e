"""The training loop: batches in, gradients out, validation and checkpoints along the way.

No framework sits between the loop and the tensors: a step is forward, masked loss and backward
for each of its batches (``accumulate`` per process), global-norm clipping, Adam; a background
thread makes the coming steps' batches meanwhile (``mtkit.data.prefetch``). Validation (dev loss, dev BLEU and chrF) runs every epoch or every
``valid_every`` steps; ``best.pt`` keeps the best model by ``stop_on``, ``last.pt`` the whole
state (model, optimiser, schedule, random state, position in the epoch, counters), so a run
stopped and resumed continues exactly where it stopped.

A run ends at its first limit (steps, epochs or time) with one more validation unless that step
was a validation step. That final validation writes its metrics line, ``best.pt`` when it is the
best, and a numbered checkpoint, but it is not one of the scheduled validations: patience, the
plateau schedule and the train-loss window do not count it, so a run continued with a higher
limit trains as the longer run would have.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from mtkit import __version__
from mtkit.checkpoint import load_checkpoint, numbered_checkpoints, save_checkpoint
from mtkit.config import Recipe, TrainConfig, data_differences, set_option
from mtkit.data.batching import Batch, BatchPlan, Update, bucket_batches, shuffled_batches, updates
from mtkit.data.dataset import DataDir
from mtkit.data.prefetch import Prefetcher
from mtkit.decoding import SearchOptions
from mtkit.device import autocast, keep_freed_memory, resolve_device, resolve_precision
from mtkit.errors import Interrupted, MtkitError, UsageError
from mtkit.fileio import append_json_line
from mtkit.models.seq2seq import Seq2Seq, build_model, count_parameters
from mtkit.rundir import RunDir, finish_run_dir, new_run_dir, replaced_by, save_run_config
from mtkit.training.distributed import Distributed, all_sum, gather_objects, init_distributed, shutdown
from mtkit.training.progress import Reporter, Window, clock
from mtkit.training.schedules import Schedule
from mtkit.training.tensorboard import EXAMPLES, TensorBoard, require_tensorboard
from mtkit.training.validation import DevSet

LIMITS = ("max_steps", "max_epochs", "max_time")
DEFAULT_EPOCHS = 10


@dataclass
class Validation:
    """One line of metrics.jsonl."""

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
    final: bool = False  # the extra validation at the limit, not a scheduled one


@dataclass
class StartingWeights:
    """Weights a new run starts from instead of random ones (fine-tuning another run), and what
    its config.json records of where they come from."""

    model: dict[str, torch.Tensor]
    parent: dict[str, Any]
    description: str  # for the log


@dataclass
class RunState:
    """Where a run stands, apart from weights, optimiser and random state; saved in last.pt."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    target_tokens: int = 0
    best_score: float = -math.inf  # the best stop_on score so far (loss negated): best.pt
    scheduled_best: float = -math.inf  # the same over scheduled validations: patience and plateau
    bad_validations: int = 0
    processes: int = 1
    window: Window = field(default_factory=Window)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RunState:
        return cls(**{**state, "window": Window(**state["window"])})


class Trainer:
    """The model, optimiser, schedule, data and progress of one run."""

    def __init__(
        self, recipe: Recipe, data: DataDir, run_dir: Path, console: Console,
        dist: Distributed = Distributed(), checkpoint: dict[str, Any] | None = None,
        tensorboard: Path | None = None,
    ) -> None:
        self.recipe, self.data, self.run_dir, self.dist = recipe, data, Path(run_dir), dist
        self.cfg = cfg = recipe.train
        keep_freed_memory()
        self.device = training_device(cfg.device, dist)
        self.precision = resolve_precision(cfg.precision, self.device)
        self.model, self.network = self._build_model()
        # The fused kernel updates all parameters in one pass over memory, on CPUs too.
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, fused=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.schedule = Schedule(cfg.schedule, cfg.warmup, cfg.plateau_factor, cfg.plateau_patience)
        self.train_split = data.encoded("train")
        max_len_a, max_len_b = recipe.model.length_limit()
        search = SearchOptions(beam=cfg.valid_beam, max_len_a=max_len_a, max_len_b=max_len_b)
        self.dev = DevSet(data, search, cfg.truncate)
        self.state = RunState(processes=dist.world)
        self.signalled = 0  # the signal that asked the run to stop, 0 for none
        self.signalled_at = 0.0
        self.reporter = Reporter(console, self.run_dir / "train.log", enabled=dist.is_main)
        self.tensorboard = tensorboard if dist.is_main else None
        self.board: TensorBoard | None = None  # open while ``run`` runs
        if checkpoint is not None:
            self.restore(checkpoint)

    def _build_model(self) -> tuple[Seq2Seq, torch.nn.Module]:
        """The model, and the module that trains it (DDP's wrapper when distributed)."""
        src_size = len(self.data.processor("src").tokenizer.vocab)
        tgt_size = len(self.data.processor("tgt").tokenizer.vocab)
        torch.manual_seed(self.cfg.seed)
        model = build_model(self.recipe.model, src_size, tgt_size).to(self.device)
        # Same initial weights everywhere (DDP also broadcasts them); dropout differs per rank.
        torch.manual_seed(self.cfg.seed + self.dist.rank)
        if not self.dist.enabled:
            return model, model
        # No device_ids: DDP would copy every input to the GPU, the source lengths too, which
        # packing then copies back (Batch.to keeps them on the CPU).
        return model, DistributedDataParallel(model)

    # -- limits ----------------------------------------------------------------------------

    def fraction_done(self, batches_in_epoch: int) -> float:
        """Fraction of the budget used: the largest of the steps, time and epoch fractions."""
        cfg, state = self.cfg, self.state
        fractions = [0.0]
        if cfg.max_steps:
            fractions.append(state.step / cfg.max_steps)
        if cfg.max_time:
            fractions.append(state.elapsed / cfg.max_time)
        if cfg.max_epochs:
            fractions.append((state.epoch + state.batch_in_epoch / max(1, batches_in_epoch)) / cfg.max_epochs)
        return min(1.0, max(fractions))

    def limit_reached(self) -> bool:
        cfg, state = self.cfg, self.state
        return bool(
            (cfg.max_steps and state.step >= cfg.max_steps)
            or (cfg.max_time and state.elapsed >= cfg.max_time)
            or (cfg.max_epochs and state.epoch >= cfg.max_epochs)
        )

    def limits(self) -> str:
        cfg = self.cfg
        parts = [f"{cfg.max_steps:,} steps" if cfg.max_steps else "", f"{cfg.max_epochs} epochs" if cfg.max_epochs else "",
                 clock(cfg.max_time) if cfg.max_time else ""]
        return " or ".join(p for p in parts if p)

    # -- one update ------------------------------------------------------------------------

    def train_step(self, update: Update, lr: float) -> tuple[float, int, int]:
        """One update: this process's batches (``--accumulate`` of them, or fewer at the end of
        an epoch), their gradients summed, then one optimiser step. Returns this process's summed
        loss, its target tokens and its padded target positions."""
        self.network.train()
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over processes, so scale by world/all tokens of the update:
        # the update is exactly that of the mean loss over every token of every batch in it.
        scale = 0.0 if update.stand_in else self.dist.world / update.tokens
        loss, tokens, padded = torch.zeros((), device=self.device), 0, 0
        for k, batch in enumerate(update.batches):
            last = k == len(update.batches) - 1
            # Gradients are exchanged once, after the last batch.
            with nullcontext() if last or not self.dist.enabled else self.network.no_sync():
                loss_sum, n_tokens = self.micro_step(batch.to(self.device), scale)
            loss, tokens, padded = loss + loss_sum, tokens + n_tokens, padded + batch.tgt_out.numel()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm, foreach=True)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return (0.0, 0, 0) if update.stand_in else (float(loss), tokens, padded)

    def micro_step(self, batch: Batch, scale: float) -> tuple[torch.Tensor, int]:
        """Forward and backward of one batch, its gradients added to those already there, its
        loss sum multiplied by ``scale``; returns the loss sum (detached) and target tokens."""
        with autocast(self.device, self.precision):
            loss_sum, n_tokens = self.network(
                batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, self.cfg.label_smoothing
            )
        self.scaler.scale(loss_sum * scale).backward()
        return loss_sum.detach(), n_tokens

    def advance(self, updates: Iterator[Update], started: float) -> tuple[float, bool]:
        """Train on the next update and move the counters; return the learning rate used and
        whether any process was asked to stop. ``started`` is the clock reading at elapsed time
        zero."""
        state = self.state
        step_started = time.perf_counter()
        update = next(updates)
        waited = time.perf_counter() - step_started
        lr = self.cfg.lr * self.schedule.factor(state.step + 1, self.fraction_done(update.batches_in_epoch))
        loss, n_tokens, padded = self.train_step(update, lr)
        state.step += 1
        state.batch_in_epoch = update.end
        if state.batch_in_epoch == update.batches_in_epoch:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        # One message agrees on the update's totals, rank 0's clock and signals.
        now = time.perf_counter()
        loss, n_tokens, padded, state.elapsed, signalled = all_sum(
            [loss, n_tokens, padded, now - started if self.dist.is_main else 0.0, float(bool(self.signalled))],
            self.dist, self.device,
        )
        state.target_tokens += int(n_tokens)
        state.window.add(loss, int(n_tokens), int(padded), now - step_started, waited)
        if self.board is not None:
            self.board.step(state.step, loss / max(1, n_tokens), lr, n_tokens / max(now - step_started, 1e-9))
        fraction = self.fraction_done(update.batches_in_epoch)
        self.reporter.update(state.step, fraction, state.window)
        if state.step % self.cfg.log_every == 0:
            self.reporter.log_step(state.step, state.epoch, state.window, lr, state.elapsed, fraction)
        return lr, bool(signalled)

    # -- the loop --------------------------------------------------------------------------

    def epoch_batches(self, epoch: int) -> BatchPlan:
        """The batches of ``epoch`` (the same in every process and in a resumed run)."""
        split, cfg = self.train_split, self.cfg
        if cfg.shuffled_batches:
            batches = shuffled_batches(len(split), cfg.batch_size, cfg.seed, epoch)
        else:
            batches = bucket_batches(
                split.src_lengths, split.tgt_lengths, cfg.batch_tokens, cfg.batch_size, cfg.seed, epoch, cfg.truncate
            )
        if not batches:
            raise MtkitError(f"{self.data.path}: the training split is empty")
        return batches

    def prefetch(self) -> Prefetcher[Update]:
        """This process's updates from where the run stands, made ahead on a background thread
        (in page-locked memory for a GPU)."""
        state, dist = self.state, self.dist
        items = updates(self.train_split, self.epoch_batches, state.epoch, state.batch_in_epoch,
                        dist.world, dist.rank, self.cfg.accumulate, self.cfg.truncate)
        if self.device.type != "cuda":
            return Prefetcher(items)
        # The thread's CUDA calls (pinning) go to this process's GPU, not to GPU 0.
        gpu = torch.cuda.current_device() if self.device.index is None else self.device.index
        return Prefetcher(items, prepare=Update.pin_memory, setup=lambda: torch.cuda.set_device(gpu))

    def run(self) -> list[Validation]:
        """Train until a limit, early stopping or a signal; return this call's validations.
        Signals take effect between updates, never within one."""
        state, cfg = self.state, self.cfg
        self.reporter.log(self._start_line())
        history: list[Validation] = []
        started = time.perf_counter() - state.elapsed
        validated, lr = True, cfg.lr
        with self._signals_caught(), self.reporter, self._tensorboard_open(), self.prefetch() as updates:
            self.reporter.start(self.fraction_done(1))
            while not self.limit_reached():
                lr, signalled = self.advance(updates, started)
                validated = self._validation_due(state.batch_in_epoch == 0)
                if validated:
                    result, early_stop = self.validate(lr)
                    history.append(result)
                    if early_stop:
                        self.reporter.log(f"early stopping: no better dev {cfg.stop_on} for {cfg.patience} validations")
                        return history
                elif cfg.save_every and state.step % cfg.save_every == 0 and not signalled:
                    self.save(numbered=True)
                if signalled and not self.limit_reached():  # after a validation due at this step
                    self._stop_on_signal()
            if not validated:
                history.append(self.validate(lr, final=True)[0])
        return history

    def _start_line(self) -> str:
        world, accumulate = self.dist.world, self.cfg.accumulate
        processes = f", {world} processes" if world > 1 else ""
        if world * accumulate > 1:
            processes += f", {world * accumulate} batches per update"
        return (
            f"{f'resuming at step {self.state.step}' if self.state.step else 'training'}: "
            f"{count_parameters(self.model):,} parameters, {len(self.train_split):,} pairs, "
            f"{self.device.type} {self.precision}{processes}; until {self.limits()}"
        )

    def _validation_due(self, epoch_done: bool) -> bool:
        every = self.cfg.valid_every
        return self.state.step % every == 0 if every else epoch_done

    @contextmanager
    def _tensorboard_open(self) -> Iterator[None]:
        if self.tensorboard is None:
            yield
            return
        with TensorBoard(self.tensorboard) as self.board:
            yield

    # -- signals ---------------------------------------------------------------------------

    @contextmanager
    def _signals_caught(self) -> Iterator[None]:
        """SIGINT/SIGTERM finish the current step, save, and stop (see _stop_on_signal); a second
        one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, _frame) -> None:
            # A second signal stops at once, without saving; one within a few seconds of the
            # first is ignored (torchrun forwards the terminal's Ctrl-C as a second signal).
            if self.signalled and time.monotonic() - self.signalled_at > 5:
                raise KeyboardInterrupt
            if not self.signalled:
                self.signalled, self.signalled_at = signum, time.monotonic()

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _stop_on_signal(self) -> None:
        self.save()
        name = "SIGTERM" if self.signalled == signal.SIGTERM else "SIGINT"
        replaces = replaced_by(self.run_dir)
        message = (
            f"stopped by {name} at step {self.state.step} (epoch {self.state.epoch}); state saved in "
            f"{self.run_dir / 'last.pt'}"
            + (f" ({replaces} is left as it was until this run ends)" if replaces else "")
            + f". Resume with: mtkit train --resume {self.run_dir}"
        )
        self.reporter.log(message)
        raise Interrupted(message, 143 if name == "SIGTERM" else 130)

    # -- validation ------------------------------------------------------------------------

    def validate(self, lr: float, final: bool = False) -> tuple[Validation, bool]:
        """Score the dev set (every rank a slice) and save; return the result and whether to stop
        early. A ``final`` validation (at the limit) leaves patience and the plateau schedule alone."""
        state, window = self.state, self.state.window
        result = Validation(
            step=state.step, epoch=state.epoch, elapsed=round(state.elapsed, 1), target_tokens=state.target_tokens,
            train_loss=window.mean_loss, dev_loss=math.nan, dev_bleu=math.nan, dev_chrf=math.nan, lr=lr,
            tokens_per_second=window.speed, padding=window.padding, final=final,
        )
        waited = window.waited_share
        if not final:  # a run continued after its limit reports the same train loss as a longer one
            state.window = Window()
        score = 0.0
        scores = self.dev.score(self.model, self.device, self.precision, self.dist)
        if scores is not None:  # rank 0, which gathered every rank's slice
            result.dev_loss, result.dev_bleu, result.dev_chrf = scores.loss, scores.bleu, scores.chrf
            if self.board is not None:
                examples = self.dev.examples(scores.translations, EXAMPLES)
                self.board.validation(state.step, scores.loss, scores.bleu, scores.chrf, examples)
            score = {"bleu": scores.bleu, "chrf": scores.chrf, "loss": -scores.loss}[self.cfg.stop_on]
        # Every rank keeps the same schedule and early-stopping state.
        score = all_sum([score], self.dist, self.device)[0]
        best = score > state.best_score
        state.best_score = max(state.best_score, score)
        stop = False
        if not final:
            improved = score > state.scheduled_best
            state.scheduled_best = max(state.scheduled_best, score)
            state.bad_validations = 0 if improved else state.bad_validations + 1
            self.schedule.on_validation(improved)
            stop = bool(self.cfg.patience and state.bad_validations >= self.cfg.patience)
        self.save(best=best, numbered=True)
        if self.dist.is_main:
            append_json_line(self.run_dir / "metrics.jsonl", asdict(result))
            self.reporter.log_validation(result, best, waited)
        return result, stop

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, best: bool = False, numbered: bool = False) -> None:
        """last.pt (everything to resume), and with ``best`` best.pt, with ``numbered`` a
        step-N.pt copy for averaging. Every rank calls this (each contributes its random
        state); rank 0 writes."""
        rng = {"torch": gather_objects(torch.get_rng_state(), self.dist)}
        if self.device.type == "cuda":
            rng["cuda"] = gather_objects(torch.cuda.get_rng_state(self.device), self.dist)
        if not self.dist.is_main:
            return
        model = self.model.state_dict()
        progress, meta = asdict(self.state), {"mtkit_version": __version__}
        save_checkpoint(self.run_dir / "last.pt", {
            "model": model, "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(), "progress": progress, "rng": rng, "meta": meta,
        })
        light = {"model": model, "progress": progress, "meta": meta}
        if best:
            save_checkpoint(self.run_dir / "best.pt", light)
        if numbered and self.cfg.keep_checkpoints:
            save_checkpoint(self.run_dir / f"step-{self.state.step}.pt", light)
            for old in numbered_checkpoints(self.run_dir)[: -self.cfg.keep_checkpoints]:
                old.unlink()

    def restore(self, state: dict[str, Any]) -> None:
        self.state = RunState.from_dict(state["progress"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"]["torch"][self.dist.rank])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"][self.dist.rank], self.device)


def training_device(name: str, dist: Distributed) -> torch.device:
    """The device of this process: with several processes on GPUs, one GPU each."""
    device = resolve_device(name)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    return device


def check_limits(cfg: TrainConfig) -> bool:
    """Settle what a run needs before it starts: a batch size and at least one limit
    (10 epochs when none is given, recorded in config.json). True when the default was used."""
    if cfg.batch_tokens is None and cfg.batch_size is None:
        raise UsageError("set train.batch_tokens or train.batch_size")
    if cfg.shuffled_batches and cfg.batch_size is None:
        raise UsageError("train.shuffled_batches takes batches of train.batch_size sentences: set it")
    if any(getattr(cfg, limit) for limit in LIMITS):
        return False
    cfg.max_epochs = DEFAULT_EPOCHS
    return True


def train(
    recipe: Recipe, data_dir: str | Path, run_dir: str | Path, force: bool = False,
    console: Console | None = None, data_keys: Iterable[str] = (),
    start: StartingWeights | None = None, tensorboard: Path | None = None,
) -> list[Validation]:
    """Train a new model on ``data_dir`` into ``run_dir``. An existing ``run_dir`` (``force``) is
    replaced only when the new run ends; until then it trains beside it (see rundir.new_run_dir).
    ``data_keys`` are the data settings the recipe gave: a data directory made with other values
    gets a warning. ``start``: initial weights (fine-tuning); ``tensorboard``: a log directory."""
    default_limit = check_limits(recipe.train)
    if tensorboard is not None:
        require_tensorboard()
    console = console or Console(stderr=True)
    dist = init_distributed(resolve_device(recipe.train.device).type)
    try:
        data = DataDir(data_dir)
        build_model(recipe.model, 8, 8)  # refuse an impossible model before creating anything
        differ = data_differences(recipe.data, data.manifest["options"], data_keys)
        if differ and dist.is_main:
            console.print(f"mtkit: warning: {data.path} was made with other data settings than the recipe: "
                          + "; ".join(differ), highlight=False, markup=False)
        # Rank 0 decides where the run trains; the others follow.
        where = Path(gather_objects(str(new_run_dir(run_dir, force) if dist.is_main else ""), dist)[0])
        if dist.is_main:
            save_run_config(where, recipe, data, dist.world, start.parent if start else None)
        trainer = Trainer(recipe, data, where, console, dist, tensorboard=tensorboard)
        if start is not None:
            trainer.model.load_state_dict(start.model)
            trainer.reporter.log(f"starting from {start.description}, with a fresh optimiser and schedule")
        if default_limit:
            trainer.reporter.log(f"no limit given: training for {DEFAULT_EPOCHS} epochs (--max-epochs, --max-steps or --max-time set one)")
        history = trainer.run()
        if dist.is_main:
            finish_run_dir(where)
        return history
    finally:
        shutdown(dist)


def resume(
    run_dir: str | Path, limits: dict[str, Any], console: Console | None = None, tensorboard: Path | None = None
) -> list[Validation]:
    """Continue a run from its ``last.pt`` with its saved configuration, ``limits`` raised."""
    if tensorboard is not None:
        require_tensorboard()
    run = RunDir(run_dir)
    recipe = run.recipe
    for key, value in limits.items():
        if value is not None:
            set_option(recipe, f"train.{key}", value)
    check_limits(recipe.train)
    dist = init_distributed(resolve_device(recipe.train.device).type)
    try:
        run.check_processes(dist.world)
        checkpoint = load_checkpoint(run.path / "last.pt")
        trainer = Trainer(recipe, run.data_dir(), run.path, console or Console(stderr=True), dist, checkpoint, tensorboard)
        if trainer.limit_reached():
            trainer.reporter.close()
            raise MtkitError(
                f"{run.path} already reached its limit at step {trainer.state.step}; raise "
                "--max-steps, --max-epochs or --max-time to continue"
            )
        if dist.is_main:
            run.save_train_config(recipe.train)
        history = trainer.run()
        if dist.is_main:
            finish_run_dir(run.path)
        return history
    finally:
        shutdown(dist)
