"""Learning-rate schedules as a multiplier of the base rate.

- ``constant``: the book's.
- ``linear``: optional warm-up, then linear decay to zero exactly when the budget runs out
  (``progress`` is the fraction used of the steps, time or epochs, whichever limit comes first).
- ``inverse-sqrt``: linear warm-up over ``warmup`` steps, then ∝ 1/√step (fairseq, Joey NMT).
- ``plateau``: multiply by ``plateau_factor`` after ``plateau_patience`` validations without
  improvement.
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("constant", "linear", "inverse-sqrt", "plateau")


class Schedule:
    def __init__(self, kind: str, warmup: int = 0, plateau_factor: float = 0.5, plateau_patience: int = 2) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
        self.kind, self.warmup = kind, warmup
        self.plateau_factor, self.plateau_patience = plateau_factor, plateau_patience
        self.scale = 1.0  # the plateau schedule's current reduction
        self.bad_validations = 0

    def factor(self, step: int, progress: float) -> float:
        """Multiplier for the update at ``step`` (1-based)."""
        warm = min(1.0, step / self.warmup) if self.warmup else 1.0
        if self.kind == "linear":
            return warm * max(0.0, 1.0 - progress)
        if self.kind == "inverse-sqrt":
            return warm * math.sqrt(max(1, self.warmup) / max(step, self.warmup, 1))
        return warm * self.scale

    def on_validation(self, improved: bool) -> None:
        if self.kind != "plateau":
            return
        self.bad_validations = 0 if improved else self.bad_validations + 1
        if self.bad_validations >= self.plateau_patience:
            self.scale *= self.plateau_factor
            self.bad_validations = 0

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "bad_validations": self.bad_validations}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.bad_validations = float(state["scale"]), int(state["bad_validations"])
