"""What /predict's forward pass costs per text with each of several checkpoints, in process.

Every checkpoint is loaded as the service loads it (`predictor_for`: the served dtype, padding and
TorchScript), then batches of `--sizes` texts drawn from bench/sentences.txt (the same texts
for every checkpoint) go through `Predictor.predict_ids`, the call the batcher makes. Rounds
alternate between the checkpoints so that both see the same moments of a shared machine; the
figure is the median over `--rounds` of µs per text. One torch thread, as a worker runs.

    .venv/bin/python bench/model_cost.py model_store/default OTHER_CHECKPOINT [--rounds 15]
        [--sizes 1 16 64] [--json]

It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.core.config import Settings  # noqa: E402
from app.inference.runtime import predictor_for  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402

SENTENCES = REPO / "bench" / "sentences.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--batches", type=int, default=20, help="batches per size and round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    torch.set_num_threads(1)
    settings = Settings()
    predictors = {str(path): predictor_for(settings, load_checkpoint(path)) for path in args.models}
    texts = [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]
    rng = random.Random(0)
    draws = {size: [rng.sample(texts, size) for _ in range(args.batches)] for size in args.sizes}
    # Encoded by each checkpoint's own vocabulary: the same texts, each model's ids.
    batches = {
        name: {
            size: [
                [p.encode_ids(text, max_chars=len(text), max_tokens=len(text) + 1) for text in draw]
                for draw in draws[size]
            ]
            for size in args.sizes
        }
        for name, p in predictors.items()
    }
    times: dict[str, dict[int, list[float]]] = {
        name: {size: [] for size in args.sizes} for name in predictors
    }
    for round_ in range(args.rounds):
        order = list(predictors) if round_ % 2 == 0 else list(reversed(predictors))
        for name in order:
            predictor = predictors[name]
            for size in args.sizes:
                started = time.perf_counter()
                for batch in batches[name][size]:
                    predictor.predict_ids(batch)
                elapsed = time.perf_counter() - started
                times[name][size].append(elapsed / (args.batches * size) * 1e6)

    result: dict[str, dict[str, Any]] = {
        name: {
            "version": predictors[name].version,
            "pass_dtype": str(predictors[name].pass_dtype).removeprefix("torch."),
            "min_rows": predictors[name].min_rows,
            "us_per_text": {
                str(size): round(statistics.median(times[name][size]), 1) for size in args.sizes
            },
        }
        for name in predictors
    }
    if args.json:
        record = {
            "kind": "model_cost",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(["bench/model_cost.py", *sys.argv[1:]]),
            "torch": torch.__version__,
            "rounds": args.rounds,
            "models": result,
        }
        print(json.dumps(record, indent=2))
        return
    print(f"µs per text, median of {args.rounds} alternating rounds (one torch thread)")
    print("| checkpoint | pass | " + " | ".join(f"batch {size}" for size in args.sizes) + " |")
    print("|---|---|" + "---:|" * len(args.sizes))
    for name, figures in result.items():
        cells = " | ".join(f"{figures['us_per_text'][str(size)]:.1f}" for size in args.sizes)
        passes = f"{figures['pass_dtype']}, {figures['min_rows']}+ rows"
        print(f"| {name} ({figures['version']}) | {passes} | {cells} |")


if __name__ == "__main__":
    main()
