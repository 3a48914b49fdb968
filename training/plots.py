"""PNG plots saved next to a checkpoint: learning curves and the test confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl

mpl.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def plot_history(epochs: Sequence[dict[str, Any]], path: Path) -> None:
    numbers = [row["epoch"] for row in epochs]
    figure, (loss_axes, f1_axes) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    loss_axes.plot(numbers, [row["train_loss"] for row in epochs], marker="o", label="train")
    loss_axes.plot(numbers, [row["dev_loss"] for row in epochs], marker="o", label="dev")
    loss_axes.set(title="weighted cross-entropy", xlabel="epoch")
    loss_axes.legend()
    f1_axes.plot(numbers, [row["dev_macro_f1"] for row in epochs], marker="o", label="macro-F1")
    f1_axes.plot(numbers, [row["dev_accuracy"] for row in epochs], marker="o", label="accuracy")
    f1_axes.set(title="dev split", xlabel="epoch")
    f1_axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4), dpi=100)
    axes.imshow(matrix, cmap="Blues")
    axes.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xticklabels=labels,
        yticklabels=labels,
        xlabel="predicted",
        ylabel="true",
        title="test confusion matrix",
    )
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            colour = "white" if count > peak / 2 else "black"
            axes.text(j, i, str(count), ha="center", va="center", color=colour)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
