"""What gzip (`app.http.middleware.GzipMiddleware`) costs a request, in process, in microseconds.

Three measurements, each the median of `--rounds` rounds of `--requests` calls:

1. The middleware alone, around a stub that answers like the fast /predict path (a ~150-byte
   JSON body with its Content-Length): the stub bare, then wrapped, for a request without
   Accept-Encoding and one with `gzip, deflate` (what httpx and browsers send). This is the
   middleware's own per-request cost, without noise from the model.
2. The whole app (the checkpoint in `--model`), a small single POST /predict driven straight
   through ASGI (no HTTP client or socket), built with and without the middleware, the two
   alternating round by round.
3. Compressing large answers: a /predict batch of the first 64 texts of bench/sentences.txt
   and /hidden-states for a 53-word text (default, and `full`): bytes before and after, and
   the time to compress at the level the middleware uses.

    .venv/bin/python bench/gzip_cost.py [--model model_store/default] [--requests 2000]

It prints figures and asserts nothing: the machine is shared, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
from asgi_lifespan import LifespanManager  # noqa: E402
from starlette.types import ASGIApp, Message, Receive, Scope, Send  # noqa: E402

from app.core.config import Settings  # noqa: E402
from app.http.middleware import GZIP_LEVEL, GzipMiddleware  # noqa: E402
from app.main import create_app  # noqa: E402

TEXT_53_WORDS = (
    "I was really looking forward to this film after all the hype, and the first half hour was "
    "genuinely gripping, but then the plot fell apart, the dialogue became painfully wooden and "
    "the ending made no sense at all. The actors did what they could, and the music was lovely, "
    "but it bored."
)
SMALL_ANSWER = orjson.dumps(
    {
        "label": "positive",
        "score": 0.9123,
        "probabilities": {"negative": 0.0311, "neutral": 0.0566, "positive": 0.9123},
        "model": {"name": "default", "version": "3f2a9c1b7d4e"},
    }
)
NO_ENCODING: list[tuple[bytes, bytes]] = []
GZIP_ACCEPTED = [(b"accept-encoding", b"gzip, deflate")]

Call = Callable[[], Awaitable[None]]


async def stub(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers as the fast path does: one start with Content-Length, one body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(SMALL_ANSWER)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": SMALL_ANSWER})


def caller(
    app: ASGIApp,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    send: Send | None = None,
) -> Call:
    """One POST to `path` through `app`, with everything but the app's own work made once.
    `send` defaults to one that checks the status and drops the rest."""
    request: Message = {"type": "http.request", "body": body, "more_body": False}
    all_headers = [
        *headers,
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]

    async def receive() -> Message:
        return request

    async def check(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"POST {path} answered {message['status']}")

    async def call() -> None:
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": all_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        await app(scope, receive, send or check)

    return call


async def per_request_us(calls: dict[str, Call], requests: int, rounds: int) -> dict[str, float]:
    """Median over rounds of the mean µs per call, the calls alternating round by round."""
    for call in calls.values():  # warm up
        for _ in range(min(requests, 200)):
            await call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(requests):
                await call()
            samples[name].append((time.perf_counter() - started) / requests * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def middleware_alone(requests: int, rounds: int) -> None:
    wrapped = GzipMiddleware(stub)
    figures = await per_request_us(
        {
            "stub, no middleware": caller(stub, "/predict", GZIP_ACCEPTED, b"{}"),
            "middleware, no Accept-Encoding": caller(wrapped, "/predict", NO_ENCODING, b"{}"),
            "middleware, gzip accepted": caller(wrapped, "/predict", GZIP_ACCEPTED, b"{}"),
        },
        requests * 10,
        rounds,
    )
    bare = figures["stub, no middleware"]
    print("\n1. The middleware alone, a 150-byte answer with Content-Length (not compressed)")
    print("| call | µs per request | added by the middleware |")
    print("|---|---:|---:|")
    for name, value in figures.items():
        print(f"| {name} | {value:.2f} | {value - bare:+.2f} |")


async def whole_app(model: Path, requests: int, rounds: int) -> None:
    settings = Settings(model_dir=model, access_log=False, log_level="WARNING", gc_freeze=False)
    with_gzip = create_app(settings)
    without = create_app(settings)
    without.user_middleware = [m for m in without.user_middleware if m.cls is not GzipMiddleware]
    body = orjson.dumps({"text": "The food was great but the service was painfully slow."})
    async with LifespanManager(with_gzip) as on, LifespanManager(without) as off:
        calls = {
            "app without the middleware, gzip accepted": caller(
                off.app, "/predict", GZIP_ACCEPTED, body
            ),
            "app with it, no Accept-Encoding": caller(on.app, "/predict", NO_ENCODING, body),
            "app with it, gzip accepted": caller(on.app, "/predict", GZIP_ACCEPTED, body),
        }
        figures = await per_request_us(calls, requests, rounds)
        print(f"\n2. The whole app ({model}), a small POST /predict on the fast path, in process")
        print("| call | µs per request |")
        print("|---|---:|")
        for name, value in figures.items():
            print(f"| {name} | {value:.1f} |")
        await large_answers(on.app)


async def large_answers(app: ASGIApp) -> None:
    sentences = (REPO / "bench" / "sentences.txt").read_text(encoding="utf-8").splitlines()
    texts = [line for line in sentences if line.strip()][:64]
    print(f"\n3. Large answers, compressed at level {GZIP_LEVEL}")
    print("| answer | bytes | gzip bytes | µs to compress |")
    print("|---|---:|---:|---:|")
    for name, path, request in (
        ("/predict, 64 texts", "/predict", {"texts": texts}),
        ("/hidden-states, 53 words, default", "/hidden-states", {"text": TEXT_53_WORDS}),
        ("/hidden-states, 53 words, full", "/hidden-states", {"text": TEXT_53_WORDS, "full": True}),
    ):
        body = await answer(app, path, orjson.dumps(request))
        started = time.perf_counter()
        for _ in range(10):
            compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
            packed = compressor.compress(body) + compressor.flush()
        elapsed = (time.perf_counter() - started) / 10 * 1e6
        assert gzip.decompress(packed) == body
        print(f"| {name} | {len(body)} | {len(packed)} | {elapsed:.0f} |")


async def answer(app: ASGIApp, path: str, body: bytes) -> bytes:
    """The app's uncompressed answer to a POST of `body` to `path`."""
    parts: list[bytes] = []

    async def collect(message: Message) -> None:
        if message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await caller(app, path, NO_ENCODING, body, collect)()
    return b"".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=REPO / "model_store" / "default")
    parser.add_argument("--requests", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    asyncio.run(middleware_alone(args.requests, args.rounds))
    asyncio.run(whole_app(args.model, args.requests, args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
