"""PNG plots saved next to a checkpoint: learning curves, test confusion matrix, reliability."""

from __future__ import annotations

import math
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


def plot_reliability(
    before: Sequence[Sequence[float]],
    after: Sequence[Sequence[float]],
    targets: Sequence[int],
    path: Path,
    bins: int = 15,
) -> None:
    """Reliability diagrams of the test split before and after calibration, side by side.

    Each bar is one of `bins` equal-width bins of top-label confidence: its height is the
    accuracy of the texts in it, the dot their mean confidence. A calibrated model's bars
    reach the diagonal. Empty bins have no bar.
    """
    from training.metrics import expected_calibration_error  # noqa: PLC0415

    figure, panels = plt.subplots(1, 2, figsize=(9, 4), dpi=100, sharey=True)
    for axes, rows, title in ((panels[0], before, "before"), (panels[1], after, "after")):
        counts, correct, confidence = [0] * bins, [0] * bins, [0.0] * bins
        for row, truth in zip(rows, targets, strict=True):
            top = max(range(len(row)), key=row.__getitem__)
            index = min(bins - 1, max(0, math.ceil(row[top] * bins) - 1))
            counts[index] += 1
            correct[index] += int(top == truth)
            confidence[index] += row[top]
        centres = [(b + 0.5) / bins for b in range(bins)]
        filled = [b for b in range(bins) if counts[b]]
        axes.bar(
            [centres[b] for b in filled],
            [correct[b] / counts[b] for b in filled],
            width=1 / bins,
            edgecolor="black",
            color="tab:blue",
            label="accuracy",
        )
        axes.plot(
            [centres[b] for b in filled],
            [confidence[b] / counts[b] for b in filled],
            "o",
            color="tab:red",
            label="mean confidence",
        )
        axes.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
        ece = expected_calibration_error(rows, targets, bins)
        axes.set(
            title=f"test split, {title} (ECE {ece:.3f})",
            xlabel="top-label confidence",
            xlim=(0, 1),
            ylim=(0, 1),
        )
    panels[0].set(ylabel="accuracy")
    panels[0].legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
