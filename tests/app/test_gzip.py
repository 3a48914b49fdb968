"""gzip: large answers compressed for clients that accept it, small ones and the rest untouched.

In process, through the real app (`app.http.middleware.GzipMiddleware` outside the request
middleware). httpx would decode gzip itself, so these tests read the raw bytes and decode them
here. tests/security/test_gzip.py replays the same over a real socket.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.http.middleware import GZIP_MINIMUM_BYTES, GzipMiddleware, accepts_gzip

pytestmark = pytest.mark.anyio

BATCH = {
    "texts": [f"review number {n}: the plot was thin but the acting superb" for n in range(40)]
}


async def raw_post(
    client: httpx.AsyncClient, path: str, body: Any, headers: dict[str, str]
) -> tuple[httpx.Response, bytes]:
    """The response and its body exactly as sent (not decoded)."""
    request = client.build_request("POST", path, json=body, headers=headers)
    response = await client.send(request, stream=True)
    raw = b"".join([chunk async for chunk in response.aiter_raw()])
    await response.aclose()
    return response, raw


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("br;q=1, *;q=0.1", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # gzip named: its own quality counts
        ("*, gzip;q=0", False),
        ("identity", False),
        ("br, zstd", False),
        ("", False),
        ("gzip;q=banana", False),  # an unreadable quality: as if gzip were not named
        ("gzip;q=2", False),
        ("gzip;level=9", False),
        ("gzipped", False),
        ("\x00gzip\xff", False),
        (",,,;;;q=,gzip;;", False),
        ("gzip;q=1.0", True),
        ("  gzip  ;  q = 0.8  ", True),
    ],
)
def test_accept_encoding_is_read_as_the_rfc_says(header: str, accepted: bool) -> None:
    assert accepts_gzip([(b"accept-encoding", header.encode("latin-1"))]) is accepted


def test_accept_encoding_over_several_headers_and_huge_ones() -> None:
    assert accepts_gzip([(b"accept-encoding", b"br"), (b"accept-encoding", b"gzip")])
    assert not accepts_gzip([(b"accept-encoding", b"gzip"), (b"accept-encoding", b"gzip;q=0")])
    assert not accepts_gzip([(b"x-accept-encoding", b"gzip")])
    huge = b"br;q=0.5, " * 100_000 + b"gzip"
    assert accepts_gzip([(b"accept-encoding", huge)]) is False  # read no further than 64 codings
    assert accepts_gzip([(b"accept-encoding", b"gzip, " + huge)])


async def test_a_large_batch_from_the_fast_path_is_compressed(serve: Any) -> None:
    async with serve("gru") as client:
        plain, plain_raw = await raw_post(
            client, "/predict", BATCH, {"accept-encoding": "identity"}
        )
        packed, packed_raw = await raw_post(client, "/predict", BATCH, {"accept-encoding": "gzip"})
    assert len(plain_raw) > GZIP_MINIMUM_BYTES
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert int(packed.headers["content-length"]) == len(packed_raw) < len(plain_raw) / 3
    assert json.loads(gzip.decompress(packed_raw)) == json.loads(plain_raw)
    assert packed.headers["x-request-id"]  # the request middleware's headers survive


async def test_a_small_answer_is_sent_as_it_is(serve: Any) -> None:
    async with serve("gru") as client:
        response, raw = await raw_post(
            client, "/predict", {"text": "lovely"}, {"accept-encoding": "gzip"}
        )
    assert response.status_code == 200
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"
    assert json.loads(raw)["label"]


async def test_without_accept_encoding_nothing_changes(serve: Any) -> None:
    async with serve("gru") as client:
        response, raw = await raw_post(client, "/predict", BATCH, {"accept-encoding": "gzip;q=0"})
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers
    assert len(json.loads(raw)["predictions"]) == len(BATCH["texts"])


async def test_routed_answers_metrics_and_errors_are_compressed_alike(serve: Any) -> None:
    gzip_only = {"accept-encoding": "gzip"}
    async with serve("lstm", fast_path=False) as client:
        batch, batch_raw = await raw_post(client, "/predict", BATCH, gzip_only)
        hidden, hidden_raw = await raw_post(
            client, "/hidden-states", {"text": "not bad at all", "full": True}, gzip_only
        )
        error, error_raw = await raw_post(client, "/predict", {"texts": [" "] * 50}, gzip_only)
        metrics = await client.get("/metrics", headers=gzip_only)
        head = await client.head("/openapi.json", headers=gzip_only)
    for response in (batch, hidden, error, metrics):
        assert response.headers["content-encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(batch_raw))["predictions"]) == len(BATCH["texts"])
    assert json.loads(gzip.decompress(hidden_raw))["layers"]
    assert error.status_code == 422
    assert json.loads(gzip.decompress(error_raw))["error"]["code"] == "validation_error"
    assert "rnn_sentiment_http_requests_total" in metrics.text  # httpx decodes it
    assert head.status_code == 200
    assert "content-encoding" not in head.headers  # HEAD: a body's length, but no body


async def test_cors_vary_is_kept(serve: Any) -> None:
    origin = "https://app.example.org"
    async with serve("gru", cors_origins=origin) as client:
        response, raw = await raw_post(
            client, "/predict", BATCH, {"accept-encoding": "gzip", "origin": origin}
        )
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers.get_list("vary") == ["Origin, Accept-Encoding"]
    assert json.loads(gzip.decompress(raw))["predictions"]


async def run(app: Any, headers: list[tuple[bytes, bytes]]) -> tuple[Message, bytes, list[Message]]:
    """Call a GzipMiddleware around `app`; its start message, body and every message sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
    await GzipMiddleware(app, minimum_size=100)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0], body, sent


def streaming_app(pieces: list[bytes], headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for index, piece in enumerate(pieces):
            more = index < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    return app


GZIP = [(b"accept-encoding", b"gzip")]


async def test_a_streamed_body_is_compressed_piece_by_piece() -> None:
    pieces = [b'{"a": "' + b"x" * 50, b"y" * 50, b"z" * 300 + b'"}']
    start, body, sent = await run(
        streaming_app(pieces, [(b"content-type", b"application/json")]), GZIP
    )
    headers = dict(start["headers"])
    assert headers[b"content-encoding"] == b"gzip"
    assert b"content-length" not in headers
    assert [m.get("more_body", False) for m in sent[1:]] == [True, True, False]
    assert gzip.decompress(body) == b"".join(pieces)
    # Each piece is flushed: what arrived so far decodes without the rest.
    first = sent[1]["body"]
    assert gzip.GzipFile(fileobj=io.BytesIO(first)).read1(1000).startswith(b'{"a"')


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([(b"content-type", b"text/event-stream")], id="event-stream"),
        pytest.param([(b"content-type", b"image/png")], id="image"),
        pytest.param([(b"content-encoding", b"br")], id="already-encoded"),
        pytest.param([(b"cache-control", b"no-transform")], id="no-transform"),
        pytest.param([(b"content-range", b"bytes 0-499/1000")], id="range"),
    ],
)
async def test_what_must_not_be_compressed_is_not(headers: list[tuple[bytes, bytes]]) -> None:
    pieces = [b"a" * 500, b"b" * 500]
    start, body, _ = await run(streaming_app(pieces, headers), GZIP)
    assert start["headers"] == headers
    assert body == b"".join(pieces)


async def test_a_file_sent_by_path_goes_as_it_is() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/dev/null"})

    _, _, sent = await run(app, GZIP)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.pathsend"]


async def test_websockets_and_lifespan_pass_straight_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def nothing() -> Message:
        return {}

    async def ignore(message: Message) -> None:
        return None

    middleware = GzipMiddleware(app)
    for kind in ("websocket", "lifespan"):
        await middleware({"type": kind, "headers": GZIP}, nothing, ignore)
    assert seen == ["websocket", "lifespan"]
