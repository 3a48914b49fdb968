"""app.http.protocol: a response's head goes out with its body, in one write, and HTTP still works.

The holding-back transport in isolation first, then a real `python -m app` over raw sockets:
keep-alive, HEAD (a head with no body to ride on), `Expect: 100-continue`. Last, the uvicorn
internals the protocol subclass relies on, each checked by name and by driving a request.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.requirements import Requirement
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
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


# ---------------------------------------------------------------------------------------------
# uvicorn's internals the protocol relies on: each check names what changed when it fails
#
# HeaderTimeoutProtocol subclasses uvicorn's HttpToolsProtocol and works with attributes and
# callbacks that are not uvicorn's public API; pyproject.toml pins uvicorn to the minor version
# checked here. Before moving the pin, run these against the new version.

PROTOCOL_ATTRIBUTES = ("loop", "transport", "scope", "cycle")  # read or replaced by the subclass
OVERRIDDEN = (
    "connection_made",
    "connection_lost",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
)
CYCLE_TRANSPORT_CALLS = {"write", "close", "is_closing"}  # what _HeadWithBody offers


def uvicorn_changed(what: str) -> str:
    return (
        f"uvicorn {uvicorn.__version__} changed an internal that app.http.protocol relies on: "
        f"{what}. Adapt HeaderTimeoutProtocol / _HeadWithBody to it (or keep the pin in "
        "pyproject.toml) before upgrading."
    )


def make_protocol(app: Any, protocol_class: type[HttpToolsProtocol]) -> HttpToolsProtocol:
    return protocol_class(
        Config(app, lifespan="off"), ServerState(), {}, asyncio.get_running_loop()
    )


async def answer_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


async def turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_installed_uvicorn_is_the_pinned_minor_version() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    (pin,) = [
        Requirement(line)
        for line in pyproject["project"]["dependencies"]
        if Requirement(line).name == "uvicorn"
    ]
    assert pin.specifier.contains(uvicorn.__version__), (
        f"uvicorn {uvicorn.__version__} is installed, pyproject.toml pins {pin}: the checks "
        "below were written against the pinned version"
    )


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_the_overridden_methods_are_uvicorns_with_the_same_parameters(name: str) -> None:
    assert name in vars(HttpToolsProtocol), uvicorn_changed(
        f"HttpToolsProtocol no longer defines {name}(), which HeaderTimeoutProtocol overrides"
    )
    theirs = list(inspect.signature(getattr(HttpToolsProtocol, name)).parameters)
    ours = list(inspect.signature(getattr(HeaderTimeoutProtocol, name)).parameters)
    assert theirs == ours, uvicorn_changed(
        f"HttpToolsProtocol.{name} now takes ({', '.join(theirs)}), "
        f"HeaderTimeoutProtocol's override ({', '.join(ours)})"
    )


@pytest.mark.anyio
async def test_the_protocol_keeps_its_state_in_the_attributes_the_subclass_uses() -> None:
    protocol = make_protocol(answer_ok, HttpToolsProtocol)
    for name in PROTOCOL_ATTRIBUTES:
        assert hasattr(protocol, name), uvicorn_changed(
            f"HttpToolsProtocol.__init__ no longer sets `{name}`"
        )
    assert protocol.loop is asyncio.get_running_loop(), uvicorn_changed(
        "HttpToolsProtocol's `loop` is not the event loop it was given"
    )
    assert vars(protocol)["cycle"] is None, uvicorn_changed(
        "a new connection's `cycle` is not None"
    )

    recorded = FakeSocketTransport()
    transport: Any = recorded
    protocol.connection_made(transport)
    assert protocol.transport is transport, uvicorn_changed(
        "connection_made() no longer keeps the transport in `transport`"
    )

    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    cycle = protocol.cycle
    assert isinstance(cycle, RequestResponseCycle), uvicorn_changed(
        f"on_headers_complete() leaves {type(cycle).__name__} in `cycle`, "
        "not a RequestResponseCycle"
    )
    assert "transport" in vars(cycle), uvicorn_changed(
        "a RequestResponseCycle no longer keeps its transport in a `transport` attribute"
    )
    assert cycle.transport is transport, uvicorn_changed(
        "a RequestResponseCycle does not write through the protocol's transport"
    )
    assert cycle.scope is protocol.scope, uvicorn_changed(
        "the request's scope is not the protocol's `scope` (BODY_RECEIVED would not reach the app)"
    )
    assert recorded.writes == [], uvicorn_changed(
        "the request's task wrote before on_headers_complete() returned, before the "
        "subclass can replace the cycle's transport"
    )
    await turns()
    assert recorded.writes, "the request was never answered"
    protocol.connection_lost(None)


def test_a_cycle_calls_only_what_the_held_back_transport_offers() -> None:
    called = set(re.findall(r"self\.transport\.(\w+)", inspect.getsource(RequestResponseCycle)))
    assert called <= CYCLE_TRANSPORT_CALLS, uvicorn_changed(
        f"RequestResponseCycle now calls {sorted(called - CYCLE_TRANSPORT_CALLS)} on its "
        "transport, which _HeadWithBody does not have"
    )
    assert set(dir(_HeadWithBody)) >= CYCLE_TRANSPORT_CALLS


@pytest.mark.anyio
async def test_a_response_goes_out_in_one_write_through_the_replaced_transport() -> None:
    protocol = make_protocol(answer_ok, HeaderTimeoutProtocol)
    transport = FakeSocketTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(protocol.cycle.transport, _HeadWithBody), uvicorn_changed(
        "the cycle's transport could not be replaced in on_headers_complete()"
    )
    await turns()
    assert len(transport.writes) == 1, uvicorn_changed(
        f"the response went out in {len(transport.writes)} writes, not one: the cycle no "
        "longer writes through the transport the protocol gives it"
    )
    (written,) = transport.writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b"\r\n\r\nok")
    protocol.connection_lost(None)


@pytest.mark.anyio
async def test_the_header_deadline_starts_with_a_request_and_stops_at_its_headers() -> None:
    protocol = make_protocol(answer_ok, HeaderTimeoutProtocol)
    assert isinstance(protocol, HeaderTimeoutProtocol)
    protocol.header_timeout_s = 0.05
    slow, prompt = FakeSocketTransport(), FakeSocketTransport()
    protocol.connection_made(slow)  # type: ignore[arg-type]
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost:")  # on_message_begin: the clock runs
    await asyncio.sleep(0.2)
    assert slow.closed, uvicorn_changed("a request whose head never ends was not closed")
    protocol.connection_lost(None)

    protocol = make_protocol(answer_ok, HeaderTimeoutProtocol)
    assert isinstance(protocol, HeaderTimeoutProtocol)
    protocol.header_timeout_s = 0.05
    protocol.connection_made(prompt)  # type: ignore[arg-type]
    protocol.data_received(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert protocol._header_timer is None, uvicorn_changed(
        "on_headers_complete() was not called when a request's head ended"
    )
    await asyncio.sleep(0.2)
    assert not prompt.closed
    assert prompt.writes
    protocol.connection_lost(None)
