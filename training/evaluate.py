"""Score a saved checkpoint on labelled data: its own default test split, or any file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.corpora import load_default_corpus
from training.data import DataError, load_file
from training.metrics import classification_metrics
from training.train import encode, predict_indices, split_examples


def evaluate_checkpoint(
    model_dir: Path, data: str, *, text_field: str = "text", label_field: str = "label"
) -> dict[str, Any]:
    """Metrics of the checkpoint on `data`.

    `data="default"` rebuilds the checkpoint's own test split of the default corpus from the
    seed and fractions in its model card, after checking the corpus is byte-identical.
    """
    loaded = load_checkpoint(model_dir)
    if data == "default":
        corpus = load_default_corpus()
        recorded = loaded.card.get("data", {})
        if recorded.get("sha256") not in (None, corpus.sha256):
            raise DataError(f"{corpus.source}: differs from the corpus this model was split from")
        config = TrainConfig.from_card(loaded.card.get("training", {}).get("config", {}))
        examples = split_examples(corpus.examples, config).test
        source = f"{corpus.source} (test split)"
    else:
        examples = load_file(Path(data), text_field=text_field, label_field=label_field).examples
        source = data
    label_index = {label: index for index, label in enumerate(loaded.labels)}
    foreign = sorted({e.label for e in examples} - set(label_index))
    if foreign:
        raise DataError(f"{source}: labels {foreign} are not among the model's {loaded.labels}")
    encoded = encode(examples, loaded.vocab, label_index, max_tokens=10_000, use_weights=False)
    metrics = classification_metrics(
        encoded.labels, predict_indices(loaded.model, encoded), loaded.labels
    )
    metrics["data"] = source
    metrics["model"] = {"name": loaded.name, "version": loaded.version}
    return metrics


def format_report(metrics: dict[str, Any]) -> str:
    lines = [
        f"model {metrics['model']['name']} ({metrics['model']['version']}) on {metrics['data']}",
        f"examples {metrics['examples']}  accuracy {metrics['accuracy']:.4f}  "
        f"macro-F1 {metrics['macro_f1']:.4f}",
        f"{'label':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}",
    ]
    for label, row in metrics["per_class"].items():
        lines.append(
            f"{label:<12}{row['precision']:>10.4f}{row['recall']:>10.4f}"
            f"{row['f1']:>10.4f}{row['support']:>10}"
        )
    matrix = metrics["confusion_matrix"]
    lines.append("confusion (rows true, columns predicted): " + " ".join(matrix["labels"]))
    lines.extend(
        "  " + " ".join(f"{n:>6}" for n in row) for row in matrix["rows_true_columns_predicted"]
    )
    return "\n".join(lines)
