"""Forward cost and worker memory over batch shapes, through the served `Predictor`.

oneDNN compiles and caches a kernel per input shape (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`, 1,024
by default). This runs, in one process with one torch thread: 1,500 batches like the service's
at c=64 (1-40 bench sentences, grouped by length as the batcher does), then 1,500 batches of
random shapes (1-64 texts of 1-120 random tokens), then the first kind again; it prints the CPU
time per text and the process RSS after each. Compare capacities by running it with the
variable set (it has to be set before torch runs a kernel, so per process):

    .venv/bin/python bench/shapes.py                                   # the server's default (32)
    ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 .venv/bin/python bench/shapes.py   # oneDNN's default
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
# The server's default (app/__main__.py), unless the caller set one.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

import psutil  # noqa: E402
import torch  # noqa: E402
from run import read_sentences  # noqa: E402 - bench/run.py, beside this script

from app.inference.batching import SPLIT_SLACK  # noqa: E402
from app.inference.predictor import Predictor  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402

BATCHES = 1500


def main() -> int:
    torch.set_num_threads(1)
    predictor = Predictor(load_checkpoint(REPO / "model_store" / "default"), torchscript=True)
    texts = read_sentences()
    encoded = [predictor.encode(t, max_chars=10_000, max_tokens=10_000).ids for t in texts]
    rng = random.Random(0)
    everyday = []
    for _ in range(BATCHES):
        batch = sorted(rng.sample(encoded, rng.randint(1, 40)), key=len)
        everyday.append([ids for ids in batch if len(ids) <= 2 * len(batch[0]) + SPLIT_SLACK])
    usable = range(2, len(predictor.vocab))

    def varied() -> Iterator[list[list[int]]]:  # made as they are run: not held in memory
        shapes = random.Random(1)
        for _ in range(BATCHES):
            yield [
                [shapes.choice(usable) for _ in range(shapes.randint(1, 120))]
                for _ in range(shapes.randint(1, 64))
            ]

    process = psutil.Process()
    print(
        f"ONEDNN_PRIMITIVE_CACHE_CAPACITY={os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY']}, "
        f"RSS after loading {process.memory_info().rss / 2**20:.0f} MB"
    )
    for name, batches in (("everyday", everyday), ("varied", None), ("everyday", everyday)):
        seconds, texts_run = 0.0, 0
        for batch in batches if batches is not None else varied():
            started = time.process_time()
            predictor.predict_ids(batch)
            seconds += time.process_time() - started
            texts_run += len(batch)
        per_text = seconds / texts_run * 1e6
        print(
            f"{BATCHES:,} {name} batches: {per_text:.1f} us CPU per text, "
            f"RSS {process.memory_info().rss / 2**20:.0f} MB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
