"""uvicorn's httptools protocol with a deadline for request headers (slow-loris protection).

uvicorn times out idle keep-alive connections, but not a client that connects and then sends
its request line and headers slowly, or never: each such connection would be held for ever.
Here every request's head must arrive within `APP_HEADER_TIMEOUT_S` of the connection being
made (or of its first byte, on a kept-alive connection); past that the connection is closed.
The body has its own timeout, in the app (`APP_BODY_TIMEOUT_S`, see `app.http.middleware`); once a
request's body has been received in full, this protocol marks its scope (`BODY_RECEIVED`), so
the app need not arm a timer for a body that is already there (the usual case: a small request
arrives in one piece).

It also sends a response's head and the start of its body in one write. uvicorn writes the
status line and headers as soon as the app sends `http.response.start`, and the body with a
second write: two system calls and often two TCP segments per response, where almost every
answer of this API fits in one. Here the head waits for the first body write of the same
event-loop turn and goes out with it (or on its own at the end of the turn, when no body
follows); kept because it measurably raises /predict throughput (`bench/ab.py` compares).

Both rely on uvicorn's internals, not its public API: the protocol's `cycle`, `scope`,
`transport` and `loop` attributes, the parser callbacks overridden below, and a request
cycle's `transport` attribute, replaced with `_HeadWithBody` before the cycle first writes.
uvicorn is pinned to one minor version for that, and tests/app/test_protocol.py fails, naming
what changed, when any of them is missing or different.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.config import get_settings

# Scope key, True once the request's whole body has been received (read by app.http.middleware).
BODY_RECEIVED = "rnn_sentiment.body_received"


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose request head takes longer than the header timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout_s = get_settings().header_timeout_s
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle is not previous:  # a new request (not an upgrade)
            # The cycle's task is created but has not run yet: it writes through this.
            cycle.transport = _HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.scope[BODY_RECEIVED] = True  # type: ignore[literal-required]

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _HeadWithBody:
    """The transport as one response sees it: its head is held back until the first body
    write of the same event-loop turn, and both go out in one `write`. It has what a request
    cycle calls on its transport: `write`, `close` and `is_closing`."""

    __slots__ = ("_head", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.write(head + data)
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            # A final response's head (a 100 Continue goes out at once: the client waits for
            # it before sending the body).
            self._head = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()
