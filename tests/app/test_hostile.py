"""Hostile HTTP against a real uvicorn process: each attack gets a clean 4xx (or a closed
connection), never a 5xx, and another client keeps getting 200s meanwhile."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.app.test_server import free_port, running, server_env, wait_ready

pytestmark = pytest.mark.slow

BODY_LIMIT = 65536
BODY_TIMEOUT_S = 2.0
HEADER_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m app` on a free port: 64 KiB body limit, 2 s header and body timeouts."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    env = server_env(
        checkpoints["lstm"],
        port,
        APP_MAX_BODY_BYTES=str(BODY_LIMIT),
        APP_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        APP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        APP_ACCESS_LOG="false",
    )
    with running([".venv/bin/python", "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        yield base_url
        assert "Traceback" not in log.read_text()


@contextmanager
def others_served(base_url: str) -> Iterator[list[int]]:
    """Another client posting to /predict the whole time; every one of its answers is a 200,
    and it gets answers both before the attack starts and after it ends."""
    statuses: list[int] = []
    done = threading.Event()
    answered = threading.Condition()

    def loop() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as client:
            while not done.is_set():
                status = client.post("/predict", json={"text": "great"}).status_code
                with answered:
                    statuses.append(status)
                    answered.notify_all()
                time.sleep(0.01)

    worker = threading.Thread(target=loop)
    worker.start()
    try:
        with answered:
            assert answered.wait_for(lambda: statuses, timeout=10)
        yield statuses
        with answered:
            seen = len(statuses)
            assert answered.wait_for(lambda: len(statuses) > seen, timeout=10)
    finally:
        done.set()
        worker.join(timeout=30)
    assert set(statuses) == {200}


def connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_response(sock: socket.socket, timeout_s: float = 10) -> tuple[int, bytes]:
    """Status and raw bytes (head and body) of the first response on `sock` (0: closed)."""
    sock.settimeout(timeout_s)
    data = b""
    while True:
        head, separator, body = data.partition(b"\r\n\r\n")
        if separator:
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                ),
                0,
            )
            if len(body) >= length:
                break
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    if not data:
        return 0, data
    return int(data.split(b" ", 2)[1]), data


def request_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: hostile", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_huge_content_length_is_refused_before_the_body(server: str) -> None:
    with others_served(server), connect(server) as sock:
        started = time.monotonic()
        sock.sendall(
            request_head("/predict", "Content-Type: application/json", f"Content-Length: {10**12}")
            + b'{"text": "'
        )
        status, raw = read_response(sock)
        assert status == 413
        assert b'"code":"body_too_large"' in raw
        assert time.monotonic() - started < 2


def test_chunked_body_over_the_limit_is_cut_off(server: str) -> None:
    with others_served(server), connect(server) as sock:
        sock.sendall(
            request_head("/predict", "Content-Type: application/json", "Transfer-Encoding: chunked")
        )
        chunk = b"x" * 16384
        sent = 0
        try:
            while sent < 100 * BODY_LIMIT:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
                sock.settimeout(0.05)
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except TimeoutError:
                    pass
                sock.settimeout(10)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, raw = read_response(sock)
        assert status == 413
        assert b'"code":"body_too_large"' in raw
        assert sent < 4 * BODY_LIMIT  # refused while streaming, not after reading it all


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(b"", id="nothing"),
        pytest.param(b"POST /predict HTTP/1.1\r\nHost: slow\r\n", id="half-the-headers"),
    ],
)
def test_slow_headers_are_dropped(server: str, sent: bytes) -> None:
    with others_served(server), connect(server) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        sock.settimeout(HEADER_TIMEOUT_S + 10)
        assert sock.recv(65536) == b""  # closed by the server
        assert HEADER_TIMEOUT_S - 0.5 < time.monotonic() - started < HEADER_TIMEOUT_S + 5


def test_header_timeout_restarts_for_each_request_on_a_kept_alive_connection(server: str) -> None:
    with connect(server) as sock:
        body = b'{"text": "fine"}'
        head = request_head(
            "/predict", "Content-Type: application/json", f"Content-Length: {len(body)}"
        )
        for _ in range(2):  # two requests, together longer than the header timeout
            sock.sendall(head[:20])
            time.sleep(HEADER_TIMEOUT_S * 0.6)
            sock.sendall(head[20:] + body)
            status, _ = read_response(sock)
            assert status == 200
        sock.sendall(head[:20])  # then a head that stalls
        sock.settimeout(HEADER_TIMEOUT_S + 10)
        assert sock.recv(65536) == b""


def test_stalled_body_times_out(server: str) -> None:
    with others_served(server), connect(server) as sock:
        started = time.monotonic()
        sock.sendall(
            request_head("/predict", "Content-Type: application/json", "Content-Length: 100")
            + b'{"text": '
        )
        status, raw = read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)
        elapsed = time.monotonic() - started
        assert status == 408
        assert b'"code":"body_timeout"' in raw
        assert BODY_TIMEOUT_S - 0.5 < elapsed < BODY_TIMEOUT_S + 5
        sock.settimeout(5)
        assert sock.recv(65536) == b""  # and the connection is closed


def test_slow_body_dripping_bytes_times_out_between_pieces(server: str) -> None:
    # One byte per second keeps each wait under the timeout; the stall at the end does not.
    with others_served(server), connect(server) as sock:
        sock.sendall(
            request_head("/tokenize", "Content-Type: application/json", "Content-Length: 100")
        )
        for byte in b'{"te':
            sock.sendall(bytes([byte]))
            time.sleep(0.5)
        status, _ = read_response(sock, timeout_s=BODY_TIMEOUT_S + 10)
        assert status == 408


def nested(depth: int) -> bytes:
    return b'{"text": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        pytest.param("/predict", nested(30_000), {400, 422}, id="nested-30k-predict"),
        pytest.param("/tokenize", nested(30_000), {400, 422}, id="nested-30k-tokenize"),
        pytest.param("/explain", nested(30_000), {400, 422}, id="nested-30k-explain"),
        pytest.param(
            "/predict", b'{"texts": [' + b'"a",' * 12_000 + b'"a"]}', {422}, id="huge-array"
        ),
        pytest.param(
            "/predict", b'{"x": [' + b"1," * 30_000 + b"1]}", {422}, id="huge-unknown-array"
        ),
        pytest.param("/predict", b'{"text": "\xff\xfe bad"}', {400, 422}, id="invalid-utf8"),
        pytest.param("/tokenize", b'{"text": "\xc3\x28"}', {400, 422}, id="invalid-utf8-tok"),
        pytest.param("/predict", b'{"text": "\\ud800"}', {200, 422}, id="lone-surrogate"),
        pytest.param("/predict", b"\x00" * 1000, {400}, id="nul-bytes"),
    ],
)
def test_hostile_json_gets_a_clean_answer(
    server: str, path: str, body: bytes, expected: set[int]
) -> None:
    assert len(body) <= BODY_LIMIT
    with others_served(server):
        response = httpx.post(
            server + path,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    assert response.status_code in expected
    if response.status_code >= 400:
        assert set(response.json()) == {"error", "request_id"}


def test_deeper_nesting_than_the_body_limit_allows_is_a_413(server: str) -> None:
    response = httpx.post(
        server + "/predict",
        content=nested(100_000),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param("text/plain", id="text"),
        pytest.param("application/x-www-form-urlencoded", id="form"),
        pytest.param("multipart/form-data; boundary=x", id="multipart"),
        pytest.param("application/xml", id="xml"),
        pytest.param("", id="empty"),
    ],
)
def test_wrong_content_type_is_415(server: str, content_type: str) -> None:
    with others_served(server):
        response = httpx.post(
            server + "/predict",
            content=b'{"text": "fine"}',
            headers={"Content-Type": content_type},
            timeout=10,
        )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("count", "size"),
    [
        pytest.param(2000, 20, id="many-headers"),
        pytest.param(1, 1_000_000, id="one-huge-header"),
        pytest.param(50, 100_000, id="many-huge-headers"),
    ],
)
def test_header_flood_is_refused_or_closed(server: str, count: int, size: int) -> None:
    with others_served(server), connect(server) as sock:
        headers = [f"X-Flood-{i}: {'a' * size}" for i in range(count)]
        with suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(
                request_head(
                    "/predict", "Content-Type: application/json", "Content-Length: 2", *headers
                )
                + b"{}"
            )
        status, _ = read_response(sock)
        assert status == 0 or 400 <= status < 500
