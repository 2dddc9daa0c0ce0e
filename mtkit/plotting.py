"""Pictures: training curves of runs (``mtkit plot``) and attention heatmaps (``translate
--show-attention`` in the terminal, ``--attention-png`` as files). matplotlib is optional."""

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
    """Draw the runs' curves (``draw_runs``) into a PNG file."""
    plt = _pyplot()
    figure = draw_runs(run_dirs)
    with atomic_write(output, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)


def draw_runs(run_dirs: list[Path]):
    """A figure with one panel per curve (rows) and x axis (columns), one line per run."""
    plt = _pyplot()
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
    return figure


def _pyplot(missing: str = "mtkit plot needs matplotlib: pip install 'mtkit[plot]' (or pip install matplotlib)"):
    """matplotlib's pyplot drawing off screen, or the error ``missing`` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MtkitError(missing) from None
    return plt


def attention_weights(model, src_ids: list[int], tgt_ids: list[int]):
    """The decoder's attention over the source (with ``<eos>``) at each output step
    (teacher-forced on ``tgt_ids`` + ``<eos>``): a (target steps, source tokens) tensor."""
    import torch

    from mtkit.data.batching import pad_sequences
    from mtkit.data.vocab import BOS, EOS

    if model.config.attention == "none":
        raise MtkitError("this model has no attention (attention = none): nothing to show")
    src, lengths = pad_sequences([torch.tensor(src_ids)], EOS)
    src, lengths = src.to(next(model.parameters()).device), lengths.to(src.device)
    rows = []
    with torch.no_grad():
        memory, state = model.encode(src, lengths)
        for token in [BOS, *tgt_ids]:
            _, state, weights = model.step(torch.tensor([token], device=src.device), memory, state)
            rows.append(weights[0].float().cpu())
    return torch.stack(rows)


def render_attention(console, src_tokens: list[str], tgt_tokens: list[str], weights) -> None:
    """A terminal heatmap: one row per output token, one column per source token."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    table.add_column("")
    for token in src_tokens:
        table.add_column(Text(token), justify="center")
    for token, row in zip(tgt_tokens, weights.tolist()):
        shades = [Text(f"{w:.2f}", style=f"on rgb({round(w * 255)},{round(w * 128)},0)") for w in row]
        table.add_row(Text(token), *shades)
    console.print(table)


def save_attention_png(path: Path, src_tokens: list[str], tgt_tokens: list[str], weights) -> None:
    plt = _pyplot("--attention-png needs matplotlib: pip install 'mtkit[plot]' (or use --show-attention)")
    figure, ax = plt.subplots(figsize=(1 + 0.5 * len(src_tokens), 1 + 0.4 * len(tgt_tokens)))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(src_tokens)), src_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt_tokens)), tgt_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    figure.tight_layout()
    with atomic_write(path, binary=True) as handle:
        figure.savefig(handle, format="png", dpi=100)
    plt.close(figure)
