"""The bare model's CPU paths, side by side: what the service runs (bfloat16 unpacked through
TorchScript where the CPU has native bfloat16, else float32), float32 unpacked
(`APP_INFERENCE_DTYPE=float32`), float64 packed (`APP_INFERENCE_DTYPE=float64`), eager float32
packed (the usual way to batch an RNN), and dynamic int8 quantisation of the LSTM and Linear
layers.

For each: forward time at batch 1 and 64 (one torch thread, varied sentences from
bench/sentences.txt), whether a text's served probabilities are identical alone and in a batch
(the service's guarantee), and accuracy / macro-F1 on the checkpoint's own test split of the
default corpus, computed exactly as `python -m training evaluate --model DIR --data default`
does (same split, same encoding, same argmax), so the metrics of a variant can be compared
with the model card's. A variant is worth adopting only if its metrics stay within 0.005.

    .venv/bin/python bench/cpu_paths.py --model model_store/default [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run import read_sentences  # noqa: E402 - bench/run.py, beside this script

from app.inference.predictor import Predictor  # noqa: E402
from app.inference.results import dtype_name  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.corpora import load_default_corpus  # noqa: E402
from training.data import stratified_split  # noqa: E402
from training.metrics import classification_metrics  # noqa: E402
from training.model import pad_ids  # noqa: E402
from training.tokenizer import tokenize  # noqa: E402
from training.train import encode  # noqa: E402

# Token ids of a batch -> each text's probabilities, as the service returns them.
Probabilities = Callable[[list[list[int]]], list[list[float]]]


def variants(model_dir: Path) -> dict[str, tuple[Probabilities, str]]:
    """name -> (batch -> probabilities, the float dtype it computes in)."""
    served = Predictor(load_checkpoint(model_dir), dtype=torch.bfloat16, torchscript=True)
    unpacked32 = Predictor(load_checkpoint(model_dir), dtype=torch.float32, torchscript=True)
    packed64 = Predictor(load_checkpoint(model_dir), dtype=torch.float64, torchscript=True)
    quantised = torch.ao.quantization.quantize_dynamic(
        load_checkpoint(model_dir).model.float().eval(), {nn.LSTM, nn.Linear}, dtype=torch.qint8
    )
    return {
        # First: the reference the others' probabilities are compared with.
        "float32 unpacked, TorchScript": (_of_predictor(unpacked32), "float32"),
        f"served: {_dtype(served)}, TorchScript": (_of_predictor(served), _dtype(served)),
        "float64 packed, TorchScript": (_of_predictor(packed64), "float64"),
        "eager float32 packed": (
            _of_module(load_checkpoint(model_dir).model.float().eval()),
            "float32",
        ),
        "dynamic int8 (LSTM + Linear)": (_of_module(quantised), "int8"),
    }


def _dtype(predictor: Predictor) -> str:
    name = dtype_name(predictor.pass_dtype)
    return f"{name} {'unpacked' if predictor.padded else 'packed'}"


def _of_predictor(predictor: Predictor) -> Probabilities:
    def probabilities(batch: list[list[int]]) -> list[list[float]]:
        return [list(p.probabilities.values()) for p in predictor.predict_ids(batch)]

    return probabilities


def _of_module(model: nn.Module) -> Probabilities:
    def probabilities(batch: list[list[int]]) -> list[list[float]]:
        ids, lengths = pad_ids(batch)
        with torch.inference_mode():
            rows: list[list[float]] = torch.softmax(model(ids, lengths), dim=-1).float().tolist()
        return rows

    return probabilities


def timing(model: Probabilities, batches: list[list[list[int]]], repeats: int) -> float:
    """Median milliseconds of one forward over each batch, cycling."""
    for batch in batches[:3]:
        model(batch)
    times = []
    for index in range(repeats):
        batch = batches[index % len(batches)]
        started = time.perf_counter()
        model(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def rows_in_length_order(
    model: Probabilities, ids: list[list[int]], size: int = 512
) -> list[list[float]]:
    """Probabilities as `training.train.predict_indices` batches: 512 at a time in length
    order; returned in input order."""
    rows: list[list[float]] = [[] for _ in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        for index, row in zip(chunk, model([ids[i] for i in chunk]), strict=True):
            rows[index] = row
    return rows


def test_split_metrics(
    model_dir: Path, model: Probabilities
) -> tuple[dict[str, float], list[list[float]]] | None:
    """`training evaluate --data default`'s metrics for any variant, and its probabilities per
    test text (None without the corpus)."""
    loaded = load_checkpoint(model_dir)
    try:
        corpus = load_default_corpus()
    except Exception as error:  # the corpus package is optional here
        print(f"test metrics skipped: {error}", file=sys.stderr)
        return None
    config = TrainConfig.from_card(loaded.card.get("training", {}).get("config", {}))
    examples = stratified_split(
        corpus.examples,
        seed=config.seed,
        dev_fraction=config.dev_fraction,
        test_fraction=config.test_fraction,
    ).test
    label_index = {label: index for index, label in enumerate(loaded.labels)}
    encoded = encode(examples, loaded.vocab, label_index, max_tokens=10_000, use_weights=False)
    rows = rows_in_length_order(model, encoded.ids)
    guesses = [max(range(len(row)), key=row.__getitem__) for row in rows]
    metrics = classification_metrics(encoded.labels, guesses, loaded.labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("model_store/default"))
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    torch.set_num_threads(1)
    vocab = load_checkpoint(args.model).vocab
    texts = read_sentences()
    encoded = [vocab.encode(tokenize(text)) for text in texts]
    singles = [[ids] for ids in encoded]
    batches64 = [
        [encoded[(start + i) % len(encoded)] for i in range(64)] for start in range(0, 200, 13)
    ]
    rows: list[dict[str, Any]] = []
    reference: list[list[float]] | None = None  # float32 unpacked's test-split probabilities
    for name, (model, dtype) in variants(args.model).items():
        batch = batches64[0]
        together = model(batch)
        alone = [model([ids])[0] for ids in batch]
        row: dict[str, Any] = {
            "name": name,
            "dtype": dtype,
            "batch1_ms": timing(model, singles, args.repeats),
            "batch64_ms": timing(model, batches64, max(30, args.repeats // 10)),
            "batch_invariant": together == alone,
            "max_abs_diff_alone_vs_batch": max(
                abs(a - b)
                for x, y in zip(together, alone, strict=True)
                for a, b in zip(x, y, strict=True)
            ),
        }
        tested = test_split_metrics(args.model, model)
        if tested is None:
            row.update({"accuracy": None, "macro_f1": None, "max_abs_diff_vs_float32": None})
        else:
            metrics, probabilities = tested
            reference = reference or probabilities  # the first variant's (float32 unpacked)
            row.update(metrics)
            row["max_abs_diff_vs_float32"] = max(
                abs(a - b)
                for x, y in zip(probabilities, reference, strict=True)
                for a, b in zip(x, y, strict=True)
            )
        rows.append(row)
        if not args.json:
            print(json.dumps(row), flush=True)
    card = json.loads((args.model / "model_card.json").read_text())
    result = {
        "model_dir": str(args.model),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "card_test_metrics": {
            key: card.get("metrics", {}).get("test", {}).get(key)
            for key in ("accuracy", "macro_f1")
        },
        "variants": rows,
    }
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
