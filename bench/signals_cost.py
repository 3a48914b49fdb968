"""What a /predict prediction's signals cost, in process, in microseconds: before and after.

Each prediction carries `token_count`, `oov_ratio` and `truncated` (filled by
`Predictor.predict_ids` from the ids it predicts), `warnings` and `confident` (added by
`app.api.responses.predict_body`). "Before" is the same code without them: a pass that only
labels its rows, and a body of label, score and probabilities. Three measurements, each the
median of `--rounds` rounds, before and after alternating round by round:

1. `predict_body` alone, for one text and for a batch of 64, with and without a
   min_confidence;
2. labelling a pass's rows (`predict_ids` less the forward pass) for 1 and 64 texts;
3. the whole app (the checkpoint in `--model`), small POST /predict requests on the fast path
   driven straight through ASGI (no HTTP client or socket), `--concurrency` at a time so the
   batcher forms batches as under load: the same app switched round by round between the two
   versions of everything the signals touch (the labelling of a pass's rows, the body, and the
   per-text metrics: "before" only counts the label, as the service did).

    .venv/bin/python bench/signals_cost.py [--model model_store/default] [--requests 2000]
        [--rounds 7] [--concurrency 32]

It prints figures and asserts nothing: the machine is shared, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from asgi_lifespan import LifespanManager  # noqa: E402
from starlette.types import Message, Scope  # noqa: E402

from app.api.responses import predict_body  # noqa: E402
from app.core.config import Settings  # noqa: E402
from app.http import fast_path  # noqa: E402
from app.inference.predictor import Predictor  # noqa: E402
from app.inference.results import PredictionResult, prediction_from  # noqa: E402
from app.inference.runtime import ModelIdentity  # noqa: E402
from app.main import create_app  # noqa: E402


def body_before(
    predictions: Sequence[PredictionResult],
    model: ModelIdentity,
    *,
    batch: bool,
    min_confidence: float | None = None,
) -> bytes:
    """`predict_body` as it was without the signals (`min_confidence` ignored: the fast path
    passes one now)."""
    ref = {"name": model.name, "version": model.version}
    if batch:
        return orjson.dumps(
            {
                "predictions": [
                    {"label": p.label, "score": p.score, "probabilities": p.probabilities}
                    for p in predictions
                ],
                "model": ref,
            }
        )
    (only,) = predictions
    return orjson.dumps(
        {
            "label": only.label,
            "score": only.score,
            "probabilities": only.probabilities,
            "model": ref,
        }
    )


def label_before(labels: Sequence[str], rows: list[list[float]]) -> list[PredictionResult]:
    """The rows of a pass labelled as `predict_ids` did without the signals."""
    return [prediction_from(labels, row) for row in rows]


def label_after(
    labels: Sequence[str], rows: list[list[float]], batch: Sequence[Sequence[int]], unk_id: int
) -> list[PredictionResult]:
    """The rows labelled as `Predictor.predict_ids` does now (kept equal to it by hand)."""
    limit: int | None = 128
    results: list[PredictionResult] = []
    for ids, row in zip(batch, rows, strict=True):
        best = max(range(len(row)), key=row.__getitem__)
        count = len(ids)
        results.append(
            PredictionResult(
                labels[best],
                row[best],
                dict(zip(labels, row, strict=True)),
                count,
                ids.count(unk_id) / count,
                limit is not None and count > limit,
            )
        )
    return results


def timed(calls: dict[str, Callable[[], object]], repeat: int, rounds: int) -> dict[str, float]:
    """Median over rounds of the mean µs per call, the calls alternating round by round."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(repeat):
                call()
            samples[name].append((time.perf_counter() - started) / repeat * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


def table(title: str, figures: dict[str, float], pairs: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print("| case | before µs | after µs | added µs |")
    print("|---|---:|---:|---:|")
    for case, before, after in pairs:
        b, a = figures[before], figures[after]
        print(f"| {case} | {b:.2f} | {a:.2f} | {a - b:+.2f} |")


def parts(predictor: Predictor, repeat: int, rounds: int) -> None:
    model = ModelIdentity(predictor.name, predictor.version)
    sentences = (REPO / "bench" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    texts = [line for line in sentences if line.strip()][:64]
    encoded = [predictor.encode_ids(t, max_chars=10_000, max_tokens=10_000) for t in texts]
    one = predictor.predict_ids(encoded[:1])
    many = predictor.predict_ids(encoded)
    figures = timed(
        {
            "1 before": lambda: body_before(one, model, batch=False),
            "1 after": lambda: predict_body(one, model, batch=False),
            "1 after, threshold": lambda: predict_body(one, model, batch=False, min_confidence=0.8),
            "64 before": lambda: body_before(many, model, batch=True),
            "64 after": lambda: predict_body(many, model, batch=True),
            "64 after, threshold": lambda: predict_body(
                many, model, batch=True, min_confidence=0.8
            ),
        },
        repeat,
        rounds,
    )
    table(
        "1. predict_body",
        figures,
        [
            ("one text", "1 before", "1 after"),
            ("one text, min_confidence", "1 before", "1 after, threshold"),
            ("64 texts", "64 before", "64 after"),
            ("64 texts, min_confidence", "64 before", "64 after, threshold"),
        ],
    )
    labels = predictor.labels
    rows_one = [list(one[0].probabilities.values())]
    rows_many = [list(p.probabilities.values()) for p in many]
    unk = predictor.vocab.unk_id
    figures = timed(
        {
            "1 before": lambda: label_before(labels, rows_one),
            "1 after": lambda: label_after(labels, rows_one, encoded[:1], unk),
            "64 before": lambda: label_before(labels, rows_many),
            "64 after": lambda: label_after(labels, rows_many, encoded, unk),
        },
        repeat,
        rounds,
    )
    table(
        "2. labelling a pass's rows",
        figures,
        [("one text", "1 before", "1 after"), ("64 texts", "64 before", "64 after")],
    )


async def whole_app(model_dir: Path, requests: int, rounds: int, concurrency: int) -> None:
    settings = Settings(model_dir=model_dir, access_log=False, log_level="WARNING", gc_freeze=False)
    app = create_app(settings)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"POST /predict answered {message['status']}")

    texts = [
        line
        for line in (REPO / "bench" / "sentences.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    bodies = [orjson.dumps({"text": text}) for text in texts]

    async with LifespanManager(app) as manager:
        state: dict[str, Any] = manager._state  # what the lifespan handed each request
        runtime = state["slot"].current.runtime
        predictor: Predictor = runtime.predictor
        batcher = runtime.batcher
        after_pass = batcher._run_batch
        observer = runtime.model_metrics
        counters = {
            label: observer._metrics.predictions.labels(observer.model, label)
            for label in predictor.labels
        }

        def count_only(label: str, *signals: object) -> None:
            counters[label].inc()

        def before_pass(batch: Sequence[Sequence[int]]) -> list[PredictionResult]:
            return label_before(predictor.labels, predictor._probabilities(batch))

        def use(before: bool) -> None:
            batcher._run_batch = before_pass if before else after_pass
            setattr(fast_path, "predict_body", body_before if before else predict_body)  # noqa: B010
            if before:
                observer.observe_prediction = count_only
            else:
                observer.__dict__.pop("observe_prediction", None)

        async def call(body: bytes) -> None:
            request: Message = {"type": "http.request", "body": body, "more_body": False}

            async def receive() -> Message:
                return request

            scope: Scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/predict",
                "raw_path": b"/predict",
                "root_path": "",
                "query_string": b"",
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                ],
                "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8000),
            }
            await manager.app(scope, receive, send)

        async def load(count: int) -> None:
            """`count` requests, `concurrency` in flight at a time, cycling through the texts."""
            for start in range(0, count, concurrency):
                await asyncio.gather(
                    *(
                        call(bodies[i % len(bodies)])
                        for i in range(start, min(count, start + concurrency))
                    )
                )

        samples: dict[bool, list[float]] = {True: [], False: []}
        for before in (True, False):  # warm up
            use(before)
            await load(min(requests, 500))
        for _ in range(rounds):
            for before in (True, False):
                use(before)
                started = time.perf_counter()
                await load(requests)
                samples[before].append((time.perf_counter() - started) / requests * 1e6)
        use(False)
    b, a = statistics.median(samples[True]), statistics.median(samples[False])
    print(
        f"\n3. The whole app ({model_dir}), POST /predict on the fast path, in process, "
        f"{concurrency} at a time (µs per request)"
    )
    print("| before µs | after µs | added µs | added |")
    print("|---:|---:|---:|---:|")
    print(f"| {b:.1f} | {a:.1f} | {a - b:+.1f} | {(a - b) / b:+.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "model_store" / "default")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight at a time (whole app)"
    )
    args = parser.parse_args()
    from training.checkpoint import load_checkpoint  # noqa: PLC0415

    parts(Predictor(load_checkpoint(args.model)), args.requests * 5, args.rounds)
    asyncio.run(whole_app(args.model, args.requests, args.rounds, args.concurrency))


if __name__ == "__main__":
    main()
