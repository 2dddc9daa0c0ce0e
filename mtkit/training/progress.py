"""Training output: a rich progress bar on a terminal, plain log lines otherwise, and train.log."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@dataclass
class Window:
    """What the steps since the last validation trained on: summed loss, target tokens, padded
    target positions, seconds, and the seconds of those that rank 0 waited for its batches.
    Saved in last.pt, so a resumed run reports the same train loss."""

    loss: float = 0.0
    tokens: int = 0
    padded: int = 0
    seconds: float = 0.0
    waited: float = 0.0

    def add(self, loss: float, tokens: int, padded: int, seconds: float, waited: float = 0.0) -> None:
        self.loss += loss
        self.tokens += tokens
        self.padded += padded
        self.seconds += seconds
        self.waited += waited

    @property
    def mean_loss(self) -> float:
        return self.loss / self.tokens if self.tokens else math.nan

    @property
    def speed(self) -> float:
        """Target tokens per second."""
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def waited_share(self) -> float:
        """The fraction of the time that training waited for batches to be made."""
        return self.waited / self.seconds if self.seconds else 0.0

    @property
    def padding(self) -> float:
        return 1 - self.tokens / self.padded if self.padded else 0.0

    def summary(self) -> str:
        return f"loss {self.mean_loss:.3f} | {self.speed:,.0f} tok/s | pad {self.padding:.1%}"


class Reporter:
    """Progress bar and log lines of rank 0 (a no-op elsewhere); a context manager that closes both."""

    def __init__(self, console: Console, log_path: Path, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.log_file = open(log_path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, fraction: float) -> None:
        if self.enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.bar.add_task("training", total=1.0, completed=fraction)
            self.bar.start()

    def update(self, step: int, fraction: float, window: Window) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=fraction, description=f"step {step} | {window.summary()}")

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        (self.bar.console if self.bar is not None else self.console).print(
            message, highlight=False, soft_wrap=True, markup=False
        )
        assert self.log_file is not None
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.log_file.flush()

    def log_step(self, step: int, epoch: int, window: Window, lr: float, elapsed: float, fraction: float) -> None:
        """A progress line; ``fraction`` of the budget is used, so at this speed the rest takes
        elapsed · (1 − fraction) / fraction."""
        left = f", about {clock(elapsed * (1 - fraction) / fraction)} to go" if fraction > 0 else ""
        self.log(f"step {step} epoch {epoch} | {window.summary()} | lr {lr:.2e} | {clock(elapsed)}{left}")

    def log_validation(self, result: Any, improved: bool, waited: float = 0.0) -> None:
        """The validation's line; ``waited``: the share of the training time since the last one
        spent waiting for batches."""
        self.log(
            f"validation step {result.step} epoch {result.epoch}: dev loss {result.dev_loss:.3f} | "
            f"dev BLEU {result.dev_bleu:.2f} | dev chrF {result.dev_chrf:.1f}{' (best)' if improved else ''} | "
            f"train loss {result.train_loss:.3f} | {result.tokens_per_second:,.0f} tok/s | "
            f"pad {result.padding:.1%} | waited for batches {waited:.1%} | {clock(result.elapsed)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
