"""Classification metrics, computed directly so training and evaluation share one definition."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    `confusion[i][j]` counts texts of true label i predicted as j. A class never predicted
    has precision 0 (and likewise recall for a class absent from `y_true`).
    """
    if len(y_true) != len(y_pred):
        raise ValueError("y_true and y_pred differ in length")
    size = len(labels)
    confusion = [[0] * size for _ in range(size)]
    for truth, guess in zip(y_true, y_pred, strict=True):
        confusion[truth][guess] += 1
    per_class: dict[str, dict[str, float]] = {}
    f1_scores: list[float] = []
    for index, label in enumerate(labels):
        true_positive = confusion[index][index]
        predicted = sum(row[index] for row in confusion)
        actual = sum(confusion[index])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1_scores.append(f1)
        per_class[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "support": actual,
        }
    total = len(y_true)
    correct = sum(confusion[index][index] for index in range(size))
    return {
        "accuracy": round(correct / total, 4) if total else 0.0,
        "macro_f1": round(sum(f1_scores) / size, 4),
        "examples": total,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(labels), "rows_true_columns_predicted": confusion},
    }


# -- calibration: do the probabilities mean what they say? ------------------------------------
#
# `probabilities` are rows of class probabilities (each summing to 1), `y_true` the true class
# of each row. The three measures answer different questions: ECE how far the top-label
# confidence is from the accuracy it announces, NLL how much probability the truth gets, Brier
# the squared distance between the probability vector and the one-hot truth.


def expected_calibration_error(
    probabilities: Sequence[Sequence[float]], y_true: Sequence[int], bins: int = 15
) -> float:
    """ECE of the top-label confidence over `bins` equal-width bins of (0, 1].

    Each row goes to the bin of its highest probability (a confidence of exactly k/bins to bin
    k-1, so 1.0 lands in the last one); ECE is the mean over bins of |accuracy - mean
    confidence|, weighted by the share of rows in the bin. 0 is perfectly calibrated.
    """
    _check_rows(probabilities, y_true)
    if bins < 1:
        raise ValueError("bins must be positive")
    counts = [0] * bins
    correct = [0] * bins
    confidence = [0.0] * bins
    for row, truth in zip(probabilities, y_true, strict=True):
        top = max(range(len(row)), key=row.__getitem__)
        score = float(row[top])
        index = min(bins - 1, max(0, math.ceil(score * bins) - 1))
        counts[index] += 1
        correct[index] += int(top == truth)
        confidence[index] += score
    total = len(y_true)
    return sum(abs(correct[b] - confidence[b]) for b in range(bins) if counts[b]) / total


def negative_log_likelihood(
    probabilities: Sequence[Sequence[float]], y_true: Sequence[int]
) -> float:
    """Mean -ln p(true class); a probability of 0 counts as the smallest positive float."""
    _check_rows(probabilities, y_true)
    return -sum(
        math.log(max(float(row[truth]), sys.float_info.min))
        for row, truth in zip(probabilities, y_true, strict=True)
    ) / len(y_true)


def brier_score(probabilities: Sequence[Sequence[float]], y_true: Sequence[int]) -> float:
    """Mean over rows of sum_k (p_k - [k == truth])^2: 0 is perfect, 2 the worst possible."""
    _check_rows(probabilities, y_true)
    return sum(
        sum((float(p) - (k == truth)) ** 2 for k, p in enumerate(row))
        for row, truth in zip(probabilities, y_true, strict=True)
    ) / len(y_true)


def calibration_metrics(
    probabilities: Sequence[Sequence[float]], y_true: Sequence[int]
) -> dict[str, float]:
    """ECE (15 bins), NLL and Brier score, rounded for a model card."""
    return {
        "ece": round(expected_calibration_error(probabilities, y_true), 5),
        "nll": round(negative_log_likelihood(probabilities, y_true), 5),
        "brier": round(brier_score(probabilities, y_true), 5),
    }


def _check_rows(probabilities: Sequence[Sequence[float]], y_true: Sequence[int]) -> None:
    if len(probabilities) != len(y_true):
        raise ValueError("probabilities and y_true differ in length")
    if not y_true:
        raise ValueError("no rows to measure")
