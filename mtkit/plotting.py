"""Training curves of one or more runs (``mtkit plot``); matplotlib is an optional extra."""

from __future__ import annotations

import json
from pathlib import Path

from mtkit.errors import MtkitError
from mtkit.fileio import atomic_write

CURVES = (("train_loss", "training loss"), ("dev_loss", "dev loss"), ("dev_bleu", "dev BLEU"))
AXES = (("step", "steps"), ("elapsed", "wall-clock time (min)"))


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise MtkitError(f"{run_dir}: no metrics.jsonl (not a run directory, or not validated yet)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_runs(run_dirs: list[Path], output: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkitError("mtkit plot needs matplotlib: pip install 'mtkit[plot]' (or pip install matplotlib)") from None
    runs = [(path.name or str(path), read_metrics(path)) for path in run_dirs]
    figure, grid = plt.subplots(len(CURVES), len(AXES), figsize=(11, 9), squeeze=False)
    for row, (key, label) in enumerate(CURVES):
        for col, (x_key, x_label) in enumerate(AXES):
            ax = grid[row][col]
            for name, metrics in runs:
                xs = [m[x_key] / (60 if x_key == "elapsed" else 1) for m in metrics]
                ax.plot(xs, [m[key] for m in metrics], marker="o", markersize=3, label=name)
            ax.set_xlabel(x_label)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    grid[0][0].legend()
    figure.tight_layout()
    with atomic_write(output, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)
