"""Streaming tests' shared parts: an app started for a checkpoint, pieces sent over HTTP, and a
WebSocket client speaking ASGI to the app.

The guarantee under test across these modules: a text sent in pieces, cut anywhere (mid-word,
mid-emoji, at spaces), ends with the probabilities one-shot /predict gives the whole text, for
every cell type; and every update on the way gives those of the text so far.

The directory is `stream`, not `streaming`: with no `tests/__init__.py`, pytest's importlib
mode names these modules from `tests/app` down, and a package `app.streaming` here would
shadow the real one.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from app.main import create_app

SECRET = "a-test-secret-of-some-length"
API_KEY = "a-stream-test-key-0123456789"
STREAMING_KINDS = ["rnn", "lstm", "gru"]  # lstm is the 2-layer one
TEXT = (
    "Not bad at all :) but the ending didn't work for me 😀🏻 ❤️ #happy @shop "
    "https://x.io/a?b=1 sooo goood… 2nd!!! isnt it"
)
TOLERANCE = 1e-5

# Characters that exercise every tokenizer rule, and the whitespace that ends a token.
ALPHABET = [
    *"abdnstxDP'\u2019:;=8-o*^)(][}{<>|/\\3!?.…#@_0123456789,%",
    *[" ", "\t", "\n", "\u00a0", "\u2028", "\x1c", "\u200b", "\ufe0f", "é", "ß"],
    *["😀", "🏻", "❤", "♥", "n't", "dont", "http://a.b", "www.", "xD", ":-)", "</3", "<3"],
]
TEXTS = st.lists(st.sampled_from(ALPHABET) | st.characters(codec="utf-8"), max_size=30).map("".join)


def cuts(text: str, pattern: str) -> list[str]:
    """`text` cut into pieces by a named pattern."""
    if pattern == "one-piece":
        return [text]
    if pattern == "every-char":
        return list(text)
    if pattern == "at-spaces":
        pieces = text.split(" ")
        return [pieces[0]] + [" " + piece for piece in pieces[1:]]
    if pattern == "before-spaces":
        return [piece + " " for piece in text.split(" ")[:-1]] + [text.rsplit(" ", maxsplit=1)[-1]]
    if pattern == "mid-word":
        bounds = [0, 2, 5, 9, 23, 31, 34, 42, 49, 60, len(text)]
    elif pattern == "mid-emoji":
        emoji = text.index("😀")
        heart = text.index("❤")
        bounds = [0, emoji + 1, heart + 1, len(text)]  # 😀|🏻 and ❤|\ufe0f
    else:
        bounds = sorted({0, len(text), *random.Random(pattern).sample(range(len(text)), 12)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


PATTERNS = ["one-piece", "every-char", "at-spaces", "before-spaces", "mid-word", "mid-emoji"]
PATTERNS += ["random-1", "random-2"]


@asynccontextmanager
async def started(
    make_settings: Any, kind: str = "lstm", **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ASGIApp]]:
    """The app for `kind`, its lifespan run: an HTTP client and the ASGI app (for WebSockets)."""
    overrides.setdefault("stream_secret", SECRET)
    # The stream's continuity is checked against a float32 /predict pass, to float32's
    # precision; a bfloat16 pass agrees to its own (test_a_bfloat16_pass_...).
    overrides.setdefault("inference_dtype", "float32")
    app = create_app(make_settings(kind, **overrides))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as client,
    ):
        yield client, manager.app


async def stream_pieces(
    client: httpx.AsyncClient, pieces: Sequence[str], *, final: bool = True
) -> list[dict[str, Any]]:
    state = None
    updates = []
    for piece in pieces:
        response = await client.post("/stream", json={"text": piece, "state": state})
        assert response.status_code == 200, response.text
        updates.append(response.json())
        state = updates[-1]["state"]
    if final:
        response = await client.post("/stream", json={"state": state, "final": True})
        assert response.status_code == 200, response.text
        updates.append(response.json())
    return updates


def assert_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for label, value in expected.items():
        assert abs(actual[label] - value) <= TOLERANCE, (label, actual, expected)


# ---------------------------------------------------------------------------------------------
# /stream/ws, driven in process through the ASGI interface


class WebSocketSession:
    """A WebSocket client speaking ASGI to the app directly (httpx has no WebSocket support)."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._outgoing: asyncio.Queue[Message] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/stream/ws",
            "raw_path": b"/stream/ws",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
        }
        self._task = asyncio.ensure_future(app(scope, self._incoming.get, self._outgoing.put))

    async def connect(self) -> None:
        await self._incoming.put({"type": "websocket.connect"})
        assert (await self.receive())["type"] == "websocket.accept"

    async def receive(self) -> Message:
        return await asyncio.wait_for(self._outgoing.get(), timeout=10)

    async def send(self, payload: Any) -> None:
        await self.send_text(json.dumps(payload))

    async def send_text(self, text: str) -> None:
        await self._incoming.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._incoming.put({"type": "websocket.receive", "bytes": data})

    async def receive_json(self) -> Any:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def expect_close(self) -> tuple[int, str, dict[str, Any] | None]:
        """(close code, reason, the error message sent before it if any)."""
        message = await self.receive()
        error = None
        if message["type"] == "websocket.send":
            error = json.loads(message["text"])
            message = await self.receive()
        assert message["type"] == "websocket.close", message
        await asyncio.wait_for(self._task, timeout=10)
        return message["code"], message.get("reason", ""), error

    async def disconnect(self) -> None:
        if not self._task.done():
            await self._incoming.put({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(self._task, timeout=10)


@asynccontextmanager
async def websocket(
    app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[WebSocketSession]:
    session = WebSocketSession(app, headers)
    await session.connect()
    try:
        yield session
    finally:
        await session.disconnect()
