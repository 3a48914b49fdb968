"""uvicorn's httptools protocol with a deadline for request headers (slow-loris protection).

uvicorn times out idle keep-alive connections, but not a client that connects and then sends
its request line and headers slowly, or never: each such connection would be held for ever.
Here every request's head must arrive within `APP_HEADER_TIMEOUT_S` of the connection being
made (or of its first byte, on a kept-alive connection); past that the connection is closed.
The body has its own timeout, in the app (`APP_BODY_TIMEOUT_S`, see `app.middleware`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.core.config import get_settings


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
        super().on_headers_complete()

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
