"""TensorBoard logs of a run (``mtkit train --tensorboard DIR``).

The ``tensorboard`` package is an optional extra (``pip install 'mtkit[tensorboard]'``); PyTorch's
``SummaryWriter`` writes its event files. Every step logs ``train/loss`` (mean per target token
of that batch), ``train/lr`` and ``train/tokens_per_second``; every validation ``dev/loss``,
``dev/bleu``, ``dev/chrf`` and ``dev/examples``, a table of a few dev sentences with their
reference and the model's translation. ``mtkit plot`` draws the same curves from metrics.jsonl
without it.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import TracebackType

from mtkit.errors import MtkitError

INSTALL_HINT = "--tensorboard needs the tensorboard package: pip install 'mtkit[tensorboard]'"
EXAMPLES = 5  # dev sentences shown at each validation


def require_tensorboard() -> None:
    """Fail before training starts, with the line that says how to install the extra."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise MtkitError(INSTALL_HINT) from None


class TensorBoard:
    """An event-file writer for one run; appends when a resumed run logs to the same directory."""

    def __init__(self, log_dir: str | Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def step(self, step: int, loss: float, lr: float, tokens_per_second: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/tokens_per_second", tokens_per_second, step)

    def validation(self, step: int, loss: float, bleu: float, chrf: float, examples: list[tuple[str, str, str]]) -> None:
        """Dev scores, and ``examples`` as (source, reference, translation) rows of a table."""
        self.writer.add_scalar("dev/loss", loss, step)
        self.writer.add_scalar("dev/bleu", bleu, step)
        self.writer.add_scalar("dev/chrf", chrf, step)
        rows = "\n".join(f"| {_cell(s)} | {_cell(r)} | {_cell(h)} |" for s, r, h in examples)
        self.writer.add_text("dev/examples", "| source | reference | translation |\n|---|---|---|\n" + rows, step)
        self.writer.flush()  # a validation is a moment worth seeing at once

    def close(self) -> None:
        self.writer.close()


def _cell(text: str) -> str:
    """Text as one Markdown table cell, shown as it is."""
    return re.sub(r"([\\|*_`<>\[\]#])", r"\\\1", text) or " "
