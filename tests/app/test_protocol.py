"""app.http.protocol: a response's head goes out with its body, in one write, and HTTP still works.

The holding-back transport in isolation first, then a real `python -m app` over raw sockets:
keep-alive, HEAD (a head with no body to ride on), `Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState

from app.http import middleware
from app.http.protocol import BODY_RECEIVED, HeaderTimeoutProtocol, _HeadWithBody
from tests.app.test_hostile import connect, read_response
from tests.app.test_server import free_port, running, server_env, wait_ready

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def held(transport: RecordingTransport) -> _HeadWithBody:
    return _HeadWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_the_head_goes_out_with_the_first_body_write() -> None:
    transport = RecordingTransport()
    cycle = held(transport)
    cycle.write(HEAD)
    assert transport.writes == []
    cycle.write(b"ok")
    cycle.write(b"more")  # later writes go straight through
    assert transport.writes == [HEAD + b"ok", b"more"]
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left
    assert transport.writes == [HEAD + b"ok", b"more"]


@pytest.mark.anyio
async def test_a_head_without_a_body_goes_out_at_the_end_of_the_turn() -> None:
    transport = RecordingTransport()
    held(transport).write(HEAD)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]


@pytest.mark.anyio
async def test_100_continue_and_other_bytes_are_not_held() -> None:
    transport = RecordingTransport()
    cycle = held(transport)
    cycle.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    cycle.write(b"5\r\nchunk\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n", b"5\r\nchunk\r\n"]


@pytest.mark.anyio
async def test_close_sends_a_held_head_first() -> None:
    transport = RecordingTransport()
    cycle = held(transport)
    cycle.write(HEAD)
    cycle.close()
    assert transport.writes == [HEAD]
    assert transport.closed
    assert cycle.is_closing()


# -- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("protocol") / "server.log"
    env = server_env(checkpoints["lstm"], port, APP_ACCESS_LOG="false")
    with running([".venv/bin/python", "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        yield base_url
        assert "Traceback" not in log.read_text()


def post(body: bytes, *headers: str) -> bytes:
    lines = ["POST /predict HTTP/1.1", "Host: protocol", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


@pytest.mark.slow
def test_kept_alive_requests_each_get_their_whole_response(server: str) -> None:
    with connect(server) as sock:
        for text in ("great", "awful", "fine"):
            sock.sendall(post(json.dumps({"text": text}).encode()))
            status, raw = read_response(sock)
            assert status == 200
            head, _, body = raw.partition(b"\r\n\r\n")
            assert b"content-length: " in head.lower()
            assert json.loads(body)["label"] in {"negative", "neutral", "positive"}


@pytest.mark.slow
def test_head_request_gets_its_head_and_the_connection_stays_usable(server: str) -> None:
    with connect(server) as sock:
        sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: protocol\r\n\r\n")
        sock.settimeout(10)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(4096)
            assert chunk, f"closed after {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 ")
        sock.sendall(post(b'{"text": "after a HEAD"}'))
        status, _ = read_response(sock)
        assert status == 200


@pytest.mark.slow
def test_expect_100_continue_is_answered_before_the_body_is_sent(server: str) -> None:
    body = b'{"text": "sent after the 100"}'
    request = post(body, "Expect: 100-continue")
    with connect(server) as sock:
        sock.sendall(request[: -len(body)])  # the head only
        sock.settimeout(10)
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        status, raw = read_response(sock)
        assert status == 200
        assert json.loads(raw.partition(b"\r\n\r\n")[2])["label"]


# ---------------------------------------------------------------------------------------------
# A body received in full is marked in the scope: the app arms no body timer for it


class FakeSocketTransport(RecordingTransport):
    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def set_write_buffer_limits(self, *args: object, **kwargs: object) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.anyio
async def test_the_scope_says_when_the_whole_body_has_arrived() -> None:
    seen: list[tuple[bool, bytes]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        arrived = bool(scope.get(BODY_RECEIVED))
        guard = middleware._BodyGuard(receive, 1000, 5.0, None, scope)
        body = b""
        while guard.pending:
            body += (await guard())["body"]
        seen.append((arrived, body))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    protocol = HeaderTimeoutProtocol(
        Config(app, lifespan="off"), ServerState(), {}, asyncio.get_running_loop()
    )
    protocol.connection_made(FakeSocketTransport())  # type: ignore[arg-type]
    head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n"
    protocol.data_received(head + b"ok!!")  # head and body together
    for _ in range(3):
        await asyncio.sleep(0)
    protocol.data_received(head + b"ha")  # half the body: the app waits for the rest
    for _ in range(3):
        await asyncio.sleep(0)
    protocol.data_received(b"lf")
    for _ in range(3):
        await asyncio.sleep(0)
    assert seen == [(True, b"ok!!"), (False, b"half")]
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_the_body_guard_arms_a_timer_only_for_a_body_still_on_its_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    armed: list[float] = []
    real_timeout = asyncio.timeout

    def counting_timeout(delay: float) -> asyncio.Timeout:
        armed.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(middleware.asyncio, "timeout", counting_timeout)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    await middleware._BodyGuard(receive, 100, 5.0, None, {BODY_RECEIVED: True})()
    assert armed == []
    await middleware._BodyGuard(receive, 100, 5.0, None, {})()  # another server: no mark
    assert armed == [5.0]
