"""/stream/ws, driven in process through the ASGI interface; its rules
(`app.streaming.websocket`): the per-connection rate, the connection count, the Origin rule.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.http.ratelimit import TokenBucket
from app.main import create_app
from app.streaming.websocket import Connections, RefusedError, offered_key, origin_refusal
from tests.app.stream.conftest import API_KEY, TEXT, cuts, started, stream_pieces, websocket


def test_the_per_connection_bucket_allows_bursts_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    now[0] += 0.5
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.5)
    now[0] += 10
    assert sum(bucket.acquire() == 0.0 for _ in range(10)) == 3
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0.0, 3)


def test_a_worker_counts_its_connections_up_to_the_cap(make_settings: Any) -> None:
    # Made with the app, so no connection races another to create it.
    connections = create_app(make_settings("gru")).state.stream_ws_connections
    assert isinstance(connections, Connections)
    assert connections.open == 0
    for _ in range(2):
        connections.enter(2)
    with pytest.raises(RefusedError) as refused:
        connections.enter(2)
    assert (refused.value.code, refused.value.error_code, refused.value.message) == (
        1013,
        "too_many_connections",
        "This server holds 2 WebSocket connections already; retry later.",
    )
    assert connections.open == 2  # the refused one was not counted
    connections.leave()
    connections.enter(2)
    assert connections.open == 2


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        pytest.param({"api_key": "k-1"}, b"k-1", id="key"),
        pytest.param({"api_key": "k-1", "text": "hi"}, None, id="more-fields"),
        pytest.param({"api_key": 1}, None, id="not-a-string"),
        pytest.param({"text": "hi"}, None, id="a-piece"),
        pytest.param(["api_key", "k-1"], None, id="not-an-object"),
    ],
)
def test_only_a_lone_api_key_is_an_authentication_message(payload: Any, key: bytes | None) -> None:
    assert offered_key(payload) == key


@pytest.mark.anyio
async def test_websocket_carries_the_same_messages(make_settings: Any) -> None:
    pieces = cuts(TEXT, "mid-word")
    async with started(make_settings, "lstm") as (client, app):
        over_http = await stream_pieces(client, pieces)
        async with websocket(app) as ws:
            state = None
            over_ws = []
            for piece in pieces:
                await ws.send({"text": piece, "state": state})
                over_ws.append(await ws.receive_json())
                state = over_ws[-1]["state"]
            await ws.send({"state": state, "final": True})
            over_ws.append(await ws.receive_json())
            # A finished stream does not end the connection: a new one can start on it.
            await ws.send({"text": "again", "state": None})
            assert (await ws.receive_json())["pending"][0]["text"] == "again"
    for ws_update, http_update in zip(over_ws, over_http, strict=True):
        ws_update.pop("state")
        http_update.pop("state")
        assert ws_update == http_update


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        pytest.param(("bytes", b'{"text": "hi"}'), 1003, "unsupported_data", id="binary"),
        pytest.param(("text", '{"text": "hi"'), 1007, "malformed_json", id="not-json"),
        pytest.param(("text", json.dumps({"text": "x" * 2000})), 1009, "message_too_big", id="big"),
        pytest.param(("json", {"text": 3}), 1008, "validation_error", id="invalid"),
        pytest.param(("json", [1, 2]), 1008, "validation_error", id="not-an-object"),
        pytest.param(("json", {"text": "hi", "state": "AAAA"}), 1008, "invalid_state", id="state"),
        pytest.param(("json", {"text": "ab" * 200}), 1008, "validation_error", id="pending"),
    ],
)
async def test_websocket_closes_cleanly_on_bad_input(
    make_settings: Any, send: tuple[str, Any], code: int, reason: str
) -> None:
    limit = {"stream_ws_max_message_bytes": 1024}
    async with started(make_settings, "gru", **limit) as (_, app), websocket(app) as ws:
        kind, payload = send
        if kind == "bytes":
            await ws.send_bytes(payload)
        elif kind == "text":
            await ws.send_text(payload)
        else:
            await ws.send(payload)
        closed_with, closed_because, error = await ws.expect_close()
    assert (closed_with, closed_because) == (code, reason)
    assert error is not None
    assert error["error"]["code"] == reason
    assert error["error"]["message"]
    assert error["request_id"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("payload", "loc", "msg"),
    [
        pytest.param(
            {"piece": "hi"},
            ["message", "piece"],
            'unknown field: send {"text": "...", "state": "...", "final": true, "model": "..."}',
            id="unknown-field",
        ),
        pytest.param(
            [1, 2],
            ["message"],
            'expected a JSON object, not an array: send {"text": "...", "state": "...", '
            '"final": true, "model": "..."}',
            id="array",
        ),
    ],
)
async def test_websocket_says_what_message_to_send(
    make_settings: Any, payload: Any, loc: list[str], msg: str
) -> None:
    async with started(make_settings, "gru") as (_, app), websocket(app) as ws:
        await ws.send(payload)
        _, _, error = await ws.expect_close()
    assert error is not None
    assert error["error"]["details"][0]["loc"] == loc
    assert error["error"]["details"][0]["msg"] == msg
    assert error["error"]["message"] == f"{'.'.join(loc)}: {msg}"


@pytest.mark.anyio
async def test_websocket_rate_limit(make_settings: Any) -> None:
    limits = {"stream_ws_rate": 0.001, "stream_ws_burst": 3}
    async with started(make_settings, "gru", **limits) as (_, app), websocket(app) as ws:
        for _ in range(3):
            await ws.send({"text": "good "})
            assert "state" in await ws.receive_json()
        await ws.send({"text": "good "})
        code, reason, error = await ws.expect_close()
    assert (code, reason) == (1008, "rate_limited")
    assert error is not None
    message = "More than 0.001 messages per second (bursts of 3); slow down."
    assert error["error"]["message"] == message


@pytest.mark.anyio
async def test_websocket_idle_connections_are_closed(make_settings: Any) -> None:
    async with (
        started(make_settings, "gru", stream_ws_idle_timeout_s=0.05) as (_, app),
        websocket(app) as ws,
    ):
        code, reason, error = await ws.expect_close()
    assert (code, reason, error) == (1001, "idle", None)


@pytest.mark.anyio
async def test_websocket_on_a_bidirectional_model(make_settings: Any) -> None:
    async with started(make_settings, "bilstm") as (_, app), websocket(app) as ws:
        await ws.send({"text": "good"})
        code, reason, error = await ws.expect_close()
    assert (code, reason) == (1008, "streaming_unsupported")
    assert error is not None
    assert "bidirectional" in error["error"]["message"]


@pytest.mark.anyio
async def test_websocket_authentication(make_settings: Any) -> None:
    key = API_KEY
    async with started(make_settings, "gru", api_keys=key) as (_, app):
        # On the handshake, as non-browser clients do.
        async with websocket(app, [(b"authorization", f"Bearer {key}".encode())]) as ws:
            await ws.send({"text": "good"})
            assert "state" in await ws.receive_json()
        async with websocket(app, [(b"authorization", b"Bearer wrong-key-1")]) as ws:
            code, reason, error = await ws.expect_close()
            assert (code, reason) == (1008, "unauthorized")
            assert error is not None
            assert "first message" in error["error"]["message"]
        # As the first message, as browsers must.
        async with websocket(app) as ws:
            await ws.send({"api_key": key})
            assert await ws.receive_json() == {"authenticated": True}
            await ws.send({"text": "good"})
            assert "state" in await ws.receive_json()
        async with websocket(app) as ws:
            await ws.send({"api_key": "wrong-key-1"})
            assert (await ws.expect_close())[:2] == (1008, "unauthorized")
        async with websocket(app) as ws:
            await ws.send({"text": "good"})
            assert (await ws.expect_close())[:2] == (1008, "unauthorized")


def handshake(
    origin: str | None, host: str, server: tuple[str, int] = ("10.0.0.5", 8000)
) -> dict[str, Any]:
    """What the Origin rule reads of a handshake: its Origin and Host, and where it arrived."""
    return {
        "origin_value": None if origin is None else origin.encode(),
        "host_value": host.encode(),
        "server": server,
    }


LOOPBACK = ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("seen", "listed", "keyed", "accepted"),
    [
        pytest.param(handshake(None, "any.test"), (), False, True, id="no-origin"),
        pytest.param(
            handshake("http://svc.test:8000", "svc.test:8000"), (), False, True, id="same"
        ),
        pytest.param(handshake("https://svc.test", "svc.test"), (), False, True, id="default-port"),
        pytest.param(
            handshake("http://svc.test", "svc.test:443"), (), False, False, id="80-vs-443"
        ),
        pytest.param(handshake("https://svc.test", "svc.test:443"), (), False, True, id="443"),
        pytest.param(handshake("http://svc.test:8080", "svc.test:80"), (), False, False, id="port"),
        # A proxy may drop the port from Host (nginx's $host): the name is compared alone.
        pytest.param(handshake("http://svc.test:8080", "svc.test"), (), False, True, id="no-port"),
        pytest.param(
            handshake("http://SVC.test:8000", "svc.TEST:8000"), (), False, True, id="case"
        ),
        pytest.param(handshake("http://other.test", "svc.test"), (), False, False, id="foreign"),
        pytest.param(handshake("http://other.test", "svc.test"), ("*",), False, True, id="star"),
        pytest.param(
            handshake("http://[::1]:8000", "[::1]:8000", ("::1", 8000)), (), False, True, id="v6"
        ),
        pytest.param(handshake("http://a.test:8000", "a.test:8000", LOOPBACK), (), False, False),
        pytest.param(handshake("http://a.test:8000", "a.test:8000", LOOPBACK), (), True, True),
        pytest.param(
            handshake("http://a.test:8000", "a.test:8000", LOOPBACK),
            ("http://a.test:8000",),
            False,
            True,
            id="rebinding-guard-listed",
        ),
        pytest.param(
            handshake("http://a.test:8000", "a.test:8000", ("::ffff:127.0.0.1", 8000)),
            (),
            False,
            False,
            id="rebinding-guard-v4-mapped",
        ),
        pytest.param(
            handshake("http://localhost:8000", "localhost:8000", LOOPBACK), (), False, True
        ),
        pytest.param(handshake("http://svc.test", "svc.test:x"), (), False, False, id="bad-host"),
        pytest.param(handshake("http://svc.test", "u@svc.test"), (), False, False, id="userinfo"),
        pytest.param(handshake("http://u@svc.test", "svc.test"), (), False, False, id="userinfo2"),
    ],
)
def test_the_websocket_origin_rule(
    seen: dict[str, Any], listed: tuple[str, ...], keyed: bool, accepted: bool
) -> None:
    assert (origin_refusal(**seen, cors_origins=listed, keyed=keyed) is None) is accepted
