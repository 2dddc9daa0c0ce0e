"""Training output: a rich progress bar on a terminal, plain log lines otherwise, and train.log."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    def __init__(self, console: Console, log_path: Path, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.log_file = open(log_path, "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self.bar: Progress | None = None
        self.task = None

    def start(self, fraction: float) -> None:
        if self.enabled and self.console.is_terminal:
            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console,
            )
            self.task = self.bar.add_task("training", total=1.0, completed=fraction)
            self.bar.start()

    def update(self, step: int, fraction: float, window: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=fraction, description=f"step {step} | {_rates(window)}")

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        (self.bar.console if self.bar is not None else self.console).print(message, highlight=False, soft_wrap=True)
        assert self.log_file is not None
        self.log_file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.log_file.flush()

    def log_step(self, step: int, epoch: int, window: dict[str, float], lr: float, elapsed: float) -> None:
        self.log(f"step {step} epoch {epoch} | {_rates(window)} | lr {lr:.2e} | {clock(elapsed)}")

    def log_validation(self, result: Any, improved: bool) -> None:
        self.log(
            f"validation step {result.step} epoch {result.epoch}: dev loss {result.dev_loss:.3f} | "
            f"dev BLEU {result.dev_bleu:.2f} | dev chrF {result.dev_chrf:.1f}{' (best)' if improved else ''} | "
            f"train loss {result.train_loss:.3f} | {result.tokens_per_second:,.0f} tok/s | "
            f"pad {result.padding:.1%} | {clock(result.elapsed)}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


def _rates(window: dict[str, float]) -> str:
    loss = window["loss"] / window["tokens"] if window["tokens"] else float("nan")
    speed = window["tokens"] / window["time"] if window["time"] else 0.0
    padding = 1 - window["tokens"] / window["padded"] if window["padded"] else 0.0
    return f"loss {loss:.3f} | {speed:,.0f} tok/s | pad {padding:.1%}"


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
