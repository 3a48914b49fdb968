"""Hostile WebSocket clients against a real server: oversized and compressed messages, socket
floods, silent sockets, key spellings, rate-limit bypasses, and foreign pages (cross-site
WebSocket hijacking, DNS rebinding). Each test fails if its hole reopens."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from tests.security.conftest import API_KEY, OTHER_KEY, Server, StartServer

pytestmark = pytest.mark.slow

PIECE = {"text": "not bad at all "}


def open_ws(
    server: Server,
    *,
    headers: dict[str, str] | None = None,
    origin: str | None = None,
    host: str | None = None,
    compression: str | None = None,
) -> ClientConnection:
    """A socket to /stream/ws; with `host`, the handshake names that host (and port) while the
    TCP connection goes to the server's loopback address, as after a DNS rebinding."""
    uri = f"{server.ws_url}/stream/ws"
    sock = None
    if host is not None:
        uri = f"ws://{host}:{server.port}/stream/ws"
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return connect(
        uri,
        sock=sock,
        additional_headers=headers,
        origin=None if origin is None else Origin(origin),
        compression=compression,
        proxy=None,  # straight to the server, whatever the environment's proxy settings
        open_timeout=10,
        close_timeout=5,
    )


def exchange(ws: ClientConnection, payload: Any = PIECE) -> dict[str, Any]:
    ws.send(json.dumps(payload))
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


def expect_close(ws: ClientConnection, timeout_s: float = 10) -> tuple[int, str, Any]:
    """(close code, reason, the error message sent before the close, or None)."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=timeout_s)))
    except ConnectionClosed as closed:
        frame = closed.rcvd
    assert frame is not None, "closed without a close frame"
    assert len(messages) <= 1, messages
    return frame.code, frame.reason, messages[0] if messages else None


def handshake_status(server: Server, **options: Any) -> int:
    """101 when the handshake is accepted (the socket is then closed), else the HTTP status."""
    try:
        with open_ws(server, **options) as ws:
            assert "state" in exchange(ws)
    except InvalidStatus as refused:
        return refused.response.status_code
    return 101


def server_process(server: Server) -> psutil.Process:
    """The `python -m app` process serving `server` (one worker: the process itself)."""
    for process in psutil.process_iter(["cmdline"]):
        if (process.info["cmdline"] or [])[-2:] != ["-m", "app"]:
            continue
        try:
            if process.environ().get("PORT") == str(server.port):
                return process
        except psutil.Error:
            continue
    raise AssertionError(f"no server process on port {server.port}")


def peak_rss_kb(process: psutil.Process) -> int:
    """The process's peak resident set (VmHWM): a message buffered whole would raise it."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def send_oversized(server: Server, size: int) -> int:
    """Send one text message of `size` bytes; the close code the server answered with."""
    with open_ws(server) as ws:
        ws.send("x" * size)
        code, _, error = expect_close(ws)
    assert error is None  # refused by the transport: no message reaches the route
    return code


def declare_oversized(server: Server, declared: int, sent: int) -> int:
    """Open a socket by hand, start a text frame that declares `declared` bytes, send `sent` of
    them and no more; the close code the server answers with. A server that buffered the
    message before checking its size would wait for the rest instead of answering."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /stream/ws HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += sock.recv(4096)
        head, _, data = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        # FIN + text frame; masked, 64-bit length (RFC 6455, 5.2).
        sock.sendall(b"\x81\xff" + struct.pack("!Q", declared) + os.urandom(4))
        with contextlib.suppress(OSError):  # the server may already have closed
            sock.sendall(os.urandom(sent))
        while len(data) < 4:
            chunk = sock.recv(4096)
            assert chunk, "closed without a close frame"
            data += chunk
    opcode, length = data[0] & 0x0F, data[1] & 0x7F
    assert (opcode, length >= 2) == (0x8, True), data[:16]  # a close frame with a code
    code: int = struct.unpack("!H", data[2:4])[0]
    return code


def test_an_oversized_message_is_refused_before_it_is_buffered(start_server: StartServer) -> None:
    server = start_server(APP_ACCESS_LOG="false")  # APP_STREAM_WS_MAX_MESSAGE_BYTES: 64 KiB
    process = server_process(server)
    # Warm up: the first sockets and refusals allocate what every later one reuses.
    with open_ws(server) as ws:
        assert "state" in exchange(ws)
    assert send_oversized(server, 65_537) == 1009
    assert declare_oversized(server, 65_537, 1024) == 1009
    before_rss, before_peak = process.memory_info().rss, peak_rss_kb(process)
    # Frames that announce 8 MiB each (under uvicorn's own default limit, so only the limit
    # the app sets refuses them), 1 MiB of it sent: answered at once, nothing buffered.
    for _ in range(20):
        assert declare_oversized(server, 8 * 1024 * 1024, 1024 * 1024) == 1009
    after_rss, after_peak = process.memory_info().rss, peak_rss_kb(process)
    # Neither the peak nor the resident set moved by more than noise (4 MiB).
    assert after_peak - before_peak < 4096, (before_peak, after_peak)
    assert after_rss - before_rss < 4 * 1024 * 1024, (before_rss, after_rss)
    # Still serving, WebSocket and HTTP alike.
    with open_ws(server) as ws:
        assert "state" in exchange(ws)
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_the_handshake_never_agrees_to_compression(start_server: StartServer) -> None:
    server = start_server()
    with open_ws(server, compression="deflate") as ws:
        offered = ws.request.headers.get("Sec-WebSocket-Extensions") if ws.request else None
        assert offered is not None
        assert "permessage-deflate" in offered
        assert ws.response is not None
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        # A message still works, uncompressed.
        assert "state" in exchange(ws)


def test_sockets_past_the_cap_are_closed_with_a_clear_code(start_server: StartServer) -> None:
    server = start_server(APP_STREAM_WS_MAX_CONNECTIONS="3")
    with ExitStack() as stack:
        held = [stack.enter_context(open_ws(server)) for _ in range(3)]
        for ws in held:
            assert "state" in exchange(ws)
        with open_ws(server) as fourth:
            code, reason, error = expect_close(fourth)
        assert (code, reason) == (1013, "too_many_connections")
        assert error["error"]["code"] == "too_many_connections"
        assert "retry later" in error["error"]["message"]
        assert error["request_id"]
        # The held sockets are unaffected.
        for ws in held:
            assert "state" in exchange(ws)
        # A socket that leaves frees its place.
        held.pop().close()
        assert eventually_accepted(server)


def eventually_accepted(server: Server, timeout_s: float = 10) -> bool:
    """Whether a new socket gets an answer within `timeout_s` (the server notices a closed
    socket a moment after the client has closed it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with open_ws(server) as ws:
            ws.send(json.dumps(PIECE))
            try:
                if "state" in json.loads(ws.recv(timeout=10)):
                    return True
            except ConnectionClosed:
                pass
        time.sleep(0.1)
    return False


def test_an_unauthenticated_socket_is_closed_at_its_deadline(start_server: StartServer) -> None:
    server = start_server(APP_API_KEYS=API_KEY, APP_STREAM_WS_AUTH_TIMEOUT_S="1")
    with open_ws(server) as silent:
        started = time.monotonic()
        code, reason, error = expect_close(silent)
        waited = time.monotonic() - started
    assert (code, reason) == (1008, "unauthorized")
    assert error["error"]["code"] == "unauthorized"
    assert "within 1 seconds" in error["error"]["message"]
    assert 0.8 <= waited < 4
    # Authenticated sockets have no such deadline: by header, and by first message in time.
    with open_ws(server, headers={"Authorization": f"Bearer {API_KEY}"}) as by_header:
        time.sleep(1.5)
        assert "state" in exchange(by_header)
    with open_ws(server) as by_message:
        assert exchange(by_message, {"api_key": API_KEY}) == {"authenticated": True}
        time.sleep(1.5)
        assert "state" in exchange(by_message)
    # A DNS-rebinding page passes the Origin check (its origin is its own), and gets no
    # further than the key check: it has no key.
    rebinding = {
        "host": "rebind.attacker.test",
        "origin": f"http://rebind.attacker.test:{server.port}",
    }
    with open_ws(server, **rebinding) as page:
        page.send(json.dumps(PIECE))
        assert expect_close(page)[:2] == (1008, "unauthorized")


def test_any_bearer_spelling_of_a_key_authenticates(start_server: StartServer) -> None:
    server = start_server(APP_API_KEYS=f"{API_KEY},{OTHER_KEY}")
    spellings = ["Bearer {key}", "bearer {key}", "BEARER {key}", "bearer  {key}", "Bearer \t {key}"]
    for spelling in spellings:
        for key in (API_KEY, OTHER_KEY):
            with open_ws(server, headers={"Authorization": spelling.format(key=key)}) as ws:
                assert "state" in exchange(ws), spelling
    for wrong in (f"Bearer {API_KEY}x", f"Basic {API_KEY}", f"Bearer{API_KEY}", API_KEY):
        with open_ws(server, headers={"Authorization": wrong}) as ws:
            code, reason, error = expect_close(ws)
        assert (code, reason) == (1008, "unauthorized"), wrong
        assert error["error"]["code"] == "unauthorized"


def test_messages_count_against_the_callers_rate_limit(start_server: StartServer) -> None:
    server = start_server(APP_API_KEYS=f"{API_KEY},{OTHER_KEY}", APP_RATE_LIMIT_PER_MINUTE="6")

    def predict(key: str) -> int:
        response = httpx.post(
            f"{server.base_url}/predict",
            json={"text": "fine"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        return response.status_code

    # One bucket of 6 per key, shared by HTTP and WebSocket: 2 requests, then 4 messages.
    assert [predict(API_KEY), predict(API_KEY)] == [200, 200]
    with open_ws(server, headers={"Authorization": f"bearer  {API_KEY}"}) as ws:
        for _ in range(4):
            assert "state" in exchange(ws)
        ws.send(json.dumps(PIECE))
        code, reason, error = expect_close(ws)
    assert (code, reason) == (1008, "rate_limited")
    assert error["error"]["code"] == "rate_limited"
    assert "retry after" in error["error"]["message"]
    assert predict(API_KEY) == 429  # the messages emptied the HTTP requests' bucket
    # Another key has its own bucket; authenticating by message takes nothing from it.
    with open_ws(server) as ws:
        assert exchange(ws, {"api_key": OTHER_KEY}) == {"authenticated": True}
        for _ in range(5):
            assert "state" in exchange(ws)
    assert predict(OTHER_KEY) == 200
    assert predict(OTHER_KEY) == 429


def logged_refusals(server: Server, expected: int, timeout_s: float = 10) -> list[Any]:
    """The refused-handshake log lines, once `expected` of them were written (log lines are
    written a moment after the event)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [
            json.loads(line) for line in server.log.read_text().splitlines() if line[:1] == "{"
        ]
        refusals = [line for line in lines if line["message"].startswith("websocket refused")]
        if len(refusals) >= expected or time.monotonic() > deadline:
            return refusals
        time.sleep(0.1)


@pytest.fixture
def origin_server(start_server: StartServer) -> Server:
    return start_server(APP_CORS_ORIGINS="https://allowed.test,chrome-extension://abcdef")


def test_browsers_open_sockets_only_from_allowed_origins(origin_server: Server) -> None:
    server = origin_server
    port = server.port
    accepted = {
        "no origin": {},
        "same origin": {"origin": f"http://127.0.0.1:{port}"},
        "same origin over TLS": {"origin": f"https://127.0.0.1:{port}"},
        "same origin by name": {"origin": f"http://localhost:{port}", "host": "localhost"},
        "listed": {"origin": "https://allowed.test"},
        "listed, spelt otherwise": {"origin": "HTTPS://Allowed.TEST:443"},
        "listed, not a URL origin": {"origin": "chrome-extension://abcdef"},
    }
    refused = {
        "foreign": {"origin": "https://evil.test"},
        "listed host, other scheme": {"origin": "http://allowed.test"},
        "listed host, other port": {"origin": "https://allowed.test:8443"},
        "same host, other port": {"origin": f"http://127.0.0.1:{port + 1}"},
        "opaque": {"origin": "null"},
        "not an origin": {"origin": "http://[::1"},
        "DNS rebinding": {
            "origin": f"http://rebind.attacker.test:{port}",
            "host": "rebind.attacker.test",
        },
    }
    statuses = {name: handshake_status(server, **options) for name, options in accepted.items()}
    statuses |= {name: handshake_status(server, **options) for name, options in refused.items()}
    assert statuses == dict.fromkeys(accepted, 101) | dict.fromkeys(refused, 403)
    refusals = logged_refusals(server, len(refused))
    assert [line["origin"] for line in refusals] == [
        options["origin"] for options in refused.values()
    ]
    assert all(line["level"] == "WARNING" for line in refusals)
    assert "DNS rebinding" in refusals[-1]["message"]
    assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
