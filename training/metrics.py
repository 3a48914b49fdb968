"""Classification metrics, computed directly so training and evaluation share one definition."""

from __future__ import annotations

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
