"""Pictures of a run: training curves and the confusion matrix.

Figures are made with matplotlib's `Figure` directly, not pyplot: no backend is switched, no display is needed,
and a notebook shows the returned figure as it is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_curves(metrics: list[dict], path: Path | None = None) -> Figure:
    """Loss and accuracy per epoch (train and validation) from the records of metrics.jsonl."""
    epochs = [m["epoch"] for m in metrics]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split in ("train", "val"):
        ax_loss.plot(epochs, [m[f"{split}_loss"] for m in metrics], label=split)
        ax_acc.plot(epochs, [m[f"{split}_acc"] for m in metrics], label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (val: clip level)", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path | None = None,
                          normalize: bool = False) -> Figure:
    """Confusion matrix, rows = true class; counts in the cells (row shares when `normalize`)."""
    counts = np.asarray(matrix, dtype=float)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    size = 2 + 0.5 * len(classes)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix" + (" (row share)" if normalize else ""))
    for (row, col), value in np.ndenumerate(shown):
        ax.text(col, row, f"{value:.2f}" if normalize else f"{int(value)}", ha="center", va="center",
                color="white" if value > shown.max() / 2 else "black", fontsize=8)
    return _save(fig, path)


def _save(fig: Figure, path: Path | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
