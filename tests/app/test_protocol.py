"""app.protocol: a response's head goes out with its body, in one write, and HTTP still works.

The holding-back transport in isolation first, then a real `python -m app` over raw sockets:
keep-alive, HEAD (a head with no body to ride on), `Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.protocol import _HeadWithBody
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
