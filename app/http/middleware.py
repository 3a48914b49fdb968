"""The one middleware every HTTP request passes: request id, body limit, metrics, access log.

A plain ASGI middleware (not `BaseHTTPMiddleware`, which costs a task and a stream per
request): it gives each request an id (the client's `X-Request-ID` when it is sane, else a new
one) and echoes it, refuses bodies over the limit before reading them (by `Content-Length`,
and by counting streamed bytes when there is none), drops a body that stalls for longer than
its timeout or takes longer in all than its deadline (408, connection closed), times the
request, counts it by route template and status (labels from a fixed set: a client cannot
mint new series), writes one access-log line, and turns any exception that escaped the
app into the common 500 error shape. It also hands each request (and WebSocket) the model
served when it arrived (`app.inference.slot`), counted in flight on it until the response is done.
POST /predict is first offered to the fast path (`app.http.fast_path`), which answers the common
case without FastAPI's per-request work.

`GzipMiddleware`, outside it, compresses answers of 1 KB or more for clients that accept gzip.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import zlib
from collections.abc import Iterable, Sequence

import orjson
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import request_id_var
from app.core.metrics import Metrics
from app.http.errors import BodyTimeout, BodyTooLarge, error_body, is_v2
from app.http.fast_path import PATH as FAST_PATH
from app.http.fast_path import PredictFastPath
from app.http.protocol import BODY_RECEIVED
from app.inference.runtime import Runtime
from app.inference.slot import ModelSlot

logger = logging.getLogger("app.request")
access_logger = logging.getLogger("app.access")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"


def _new_request_id() -> str:
    # Not os.urandom: a system call per request. The random module is reseeded in every forked
    # worker, and an id needs to be unique, not secret.
    return f"{random.getrandbits(64):016x}"


class RequestMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        access_log: bool = True,
        fast_path: PredictFastPath | None = None,
        body_timeout_s: float | None = None,
        body_deadline_s: float | None = None,
        routes: Sequence[BaseRoute] = (),
    ) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.body_deadline_s = body_deadline_s
        self.routes = routes
        self._labels: dict[object, str] | None = None
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                _take_serving(scope)
            await self.app(scope, receive, send)
            return
        runtime = _take_serving(scope)
        if runtime is not None:
            runtime.in_flight += 1
            try:
                await self._http(scope, receive, send)
            finally:
                runtime.in_flight -= 1
        else:
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id, content_length = _read_headers(scope)
        token = request_id_var.set(request_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        status = 500
        response_started = False
        template: str | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        limit = self.max_body_bytes
        receive_with_limit = _BodyGuard(
            receive, limit, self.body_timeout_s, self.body_deadline_s, scope
        )

        try:
            if content_length is not None and content_length > limit:
                # Refused on the header alone: not one byte of the body is read.
                await _send_error(
                    send_with_id, 413, "body_too_large", BodyTooLarge(limit).detail, scope=scope
                )
            elif (
                self.fast_path is not None
                and scope["path"] == FAST_PATH
                and scope["method"] == "POST"
            ):
                template = FAST_PATH
                app_receive = await self.fast_path(scope, receive_with_limit, send_with_id)
                if app_receive is not None:  # not one for the fast path: FastAPI answers
                    template = None
                    await self.app(scope, app_receive, send_with_id)
            else:
                await self.app(scope, receive_with_limit, send_with_id)
        except BodyTooLarge as error:
            if response_started:
                raise
            await _send_error(send_with_id, 413, "body_too_large", error.detail, scope=scope)
        except BodyTimeout as error:
            if response_started:
                raise
            await _send_error(
                send_with_id, 408, "body_timeout", error.detail, close=True, scope=scope
            )
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if response_started:
                raise  # the server aborts the connection; nothing else can be said
            await _send_error(
                send_with_id, 500, "internal_error", "Internal server error.", scope=scope
            )
        finally:
            self._finish(scope, status, time.perf_counter() - started, template)
            request_id_var.reset(token)

    def _finish(self, scope: Scope, status: int, elapsed: float, template: str | None) -> None:
        if template is None:
            template = getattr(scope.get("route"), "path", None)
        if template is None:
            template = self._label_of(scope.get("endpoint"))
        method = scope["method"]
        self.metrics.observe_request(template, method, status, elapsed)
        if self.access_log:
            path = scope["path"]
            access_logger.info(
                f"{method} {path} {status} {elapsed * 1000:.2f}ms",
                extra={
                    "method": method,
                    "path": path,
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "client": (scope.get("client") or ("", 0))[0],
                },
            )

    def _label_of(self, endpoint: object) -> str:
        """The label of a plain Starlette route or mount (/openapi.json, /static/...), which
        leave no route in the scope, by the endpoint routing chose: one label per route or
        mount, and one for everything else (no route matched, CORS preflights)."""
        if self._labels is None:  # the routes are complete once requests arrive
            self._labels = {}
            for route in self.routes:
                if isinstance(route, Mount):
                    self._labels[route.app] = route.path + "/{path}"
                elif isinstance(route, Route):
                    self._labels[route.endpoint] = route.path
        if endpoint is None:
            return UNMATCHED_ROUTE
        return self._labels.get(endpoint, UNMATCHED_ROUTE)


def _take_serving(scope: Scope) -> Runtime | None:
    """Give the request the model served now (`app.inference.slot`): its runtime and streams go into
    the request's own state, so a reload mid-request does not change what it works with."""
    state = scope.get("state")
    if state is None:
        return None
    slot: ModelSlot | None = state.get("slot")
    serving = slot.current if slot is not None else None
    if serving is None:
        return None
    state["runtime"] = serving.runtime
    state["streams"] = serving.streams
    return serving.runtime


class _BodyGuard:
    """`receive` that raises `BodyTooLarge` past the limit, and `BodyTimeout` when a body
    stalls for `timeout_s` or is still arriving `deadline_s` after the first read: a client
    trickling a byte at a time cannot keep a request open for ever."""

    __slots__ = (
        "deadline",
        "deadline_s",
        "limit",
        "pending",
        "receive",
        "received",
        "scope",
        "timeout_s",
    )

    def __init__(
        self,
        receive: Receive,
        limit: int,
        timeout_s: float | None,
        deadline_s: float | None,
        scope: Scope,
    ) -> None:
        self.receive = receive
        self.limit = limit
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.deadline: float | None = None
        self.scope = scope
        self.received = 0
        self.pending = True

    def _wait_s(self) -> float | None:
        """How long the next read may wait: the stall timeout, cut to what is left of the
        deadline; None for no limit."""
        wait_s = self.timeout_s
        if self.deadline_s is not None:
            now = asyncio.get_running_loop().time()
            if self.deadline is None:
                self.deadline = now + self.deadline_s
            left = self.deadline - now
            wait_s = left if wait_s is None else min(wait_s, left)
        return wait_s

    async def __call__(self) -> Message:
        # No timer for a body the server already holds in full (app.http.protocol marks it).
        wait_s = self._wait_s() if self.pending and not self.scope.get(BODY_RECEIVED) else None
        if wait_s is not None:
            # A client that stops sending its body mid-way is dropped, not waited for.
            try:
                async with asyncio.timeout(max(wait_s, 0.0)):
                    message = await self.receive()
            except TimeoutError:
                raise self._timed_out() from None
        else:
            message = await self.receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise BodyTooLarge(self.limit)
            self.pending = message.get("more_body", False)
        return message

    def _timed_out(self) -> BodyTimeout:
        """The error for the limit that ran out: the whole body's deadline, or a stall."""
        if self.deadline is not None and asyncio.get_running_loop().time() >= self.deadline:
            return BodyTimeout(self.deadline_s or 0.0, whole=True)
        return BodyTimeout(self.timeout_s or 0.0)


def _read_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id to use (the client's when sane, else a new one) and Content-Length."""
    request_id = ""
    content_length: int | None = None
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                request_id = candidate
        elif name == b"content-length":
            try:
                content_length = int(value)
            except ValueError:
                content_length = None
    return request_id or _new_request_id(), content_length


async def _send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    *,
    close: bool = False,
    scope: Scope | None = None,
) -> None:
    """The error in the service's shape; under /v2 in the Open Inference Protocol's."""
    body = (
        orjson.dumps({"error": message})
        if scope is not None and is_v2(scope)
        else error_body(code, message)
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if close:  # the rest of the body may still arrive: the connection cannot be reused
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# Compression

GZIP_MINIMUM_BYTES = 1024
"""Smaller bodies are sent as they are: gzip's header and a round trip through zlib cost more
than the bytes they would save."""
# zlib's fastest level: on this service's JSON (floats, mostly) it compresses about as well as
# the default level 6 (bodies some 5% larger) in a quarter to a fifth of the time, and every
# microsecond spent compressing on the event loop is one the other requests wait.
GZIP_LEVEL = 1
GZIP_THREAD_BYTES = 64 * 1024  # bodies this large are compressed off the event loop
# Bodies already compressed, or read as a stream as they arrive, are sent as they are.
_NOT_COMPRESSED_TYPES = (b"text/event-stream", b"image/", b"audio/", b"video/", b"font/woff")
_NOT_COMPRESSED_STATUSES = frozenset({204, 206, 304})
_MAX_CODINGS = 64  # an Accept-Encoding header with more elements than this is read no further


# Clients send the same few Accept-Encoding values ("gzip, deflate", "gzip, deflate, br, zstd"):
# each is read once. Bounded, so a client sending a new value each time only reads it each time.
_ACCEPTS: dict[bytes, bool] = {}
_ACCEPTS_SIZE = 128
_ACCEPTS_VALUE_BYTES = 128


def accepts_gzip(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the request's Accept-Encoding headers accept gzip (RFC 9110, 12.5.3).

    `gzip` (or `x-gzip`) with a quality above 0 accepts it, and so does `*` when gzip is not
    named; `gzip;q=0` refuses it. An element whose quality cannot be read counts as absent.
    Never raises, whatever the header holds.
    """
    value: bytes | None = None
    for name, field in headers:
        if name == b"accept-encoding":
            if value is not None:  # several headers: read them together, uncached
                return _accepts_gzip(headers)
            value = field
    if value is None:
        return False
    known = _ACCEPTS.get(value)
    if known is None:
        known = _accepts_gzip(((b"accept-encoding", value),))
        if len(value) <= _ACCEPTS_VALUE_BYTES and len(_ACCEPTS) < _ACCEPTS_SIZE:
            _ACCEPTS[value] = known
    return known


def _accepts_gzip(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    gzip_q: float | None = None
    star_q: float | None = None
    for name, value in headers:
        if name != b"accept-encoding":
            continue
        codings = value.lower()
        if b"gzip" not in codings and b"*" not in codings:
            continue
        for element in codings.split(b",", _MAX_CODINGS)[:_MAX_CODINGS]:
            coding, _, parameters = element.partition(b";")
            coding = coding.strip()
            if coding not in (b"gzip", b"x-gzip", b"*"):
                continue
            quality = _quality(parameters)
            if quality is None:
                continue
            if coding == b"*":
                star_q = quality
            else:
                gzip_q = quality
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


_QVALUE = re.compile(rb"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*")


def _quality(parameters: bytes) -> float | None:
    """The `q` of an Accept-Encoding element's parameters: 1 when absent, None when invalid."""
    if not parameters.strip():
        return 1.0
    match = _QVALUE.fullmatch(parameters)
    return float(match[1]) if match else None


class GzipMiddleware:
    """gzip for responses of `minimum_size` bytes or more, to clients that accept it.

    A plain ASGI middleware, outside the request middleware so that the fast /predict path's
    answers are compressed too. A request without gzip in Accept-Encoding (and any HEAD
    request, or WebSocket) costs one look at its headers and passes straight through. For the
    others, a response whose Content-Length is below the threshold (a single /predict) is
    sent as it is, only gaining `Vary: Accept-Encoding`; a larger one is compressed in one go,
    and a response that streams its body (no length, or several pieces) is compressed piece by
    piece, each piece flushed so the client can read it as it comes. Responses that are
    already encoded, partial, empty by status, marked `no-transform`, or of a type that is
    compressed already or read as it arrives (event streams) are left alone.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        minimum_size: int = GZIP_MINIMUM_BYTES,
        level: int = GZIP_LEVEL,
        thread_bytes: int = GZIP_THREAD_BYTES,
    ) -> None:
        self.app = app
        self.minimum_size = minimum_size
        self.level = level
        self.thread_bytes = thread_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] == "HEAD"
            or not accepts_gzip(scope["headers"])
        ):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _GzipSend(self, send))


class _GzipSend:
    """The `send` of one response to a client that accepts gzip (see `GzipMiddleware`)."""

    __slots__ = ("compressor", "middleware", "mode", "send", "start")

    def __init__(self, middleware: GzipMiddleware, send: Send) -> None:
        self.middleware = middleware
        self.send = send
        self.start: Message | None = None  # held until the first body piece decides
        self.mode = "undecided"  # then "identity" or "gzip"
        self.compressor: zlib._Compress | None = None

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._start(message)
            if self.mode == "identity":
                await self.send(message)
            return
        if self.mode == "identity" or kind != "http.response.body":
            if self.start is not None:  # e.g. a file sent by path: it goes as it is
                start, self.start = self.start, None
                await self.send(start)
            await self.send(message)
            return
        body: bytes = message.get("body", b"")
        more = message.get("more_body", False)
        if self.mode == "undecided":
            assert self.start is not None
            start, self.start = self.start, None
            if not more and len(body) < self.middleware.minimum_size:
                self.mode = "identity"
                await self.send(start)
                await self.send(message)
                return
            self.mode = "gzip"
            self.compressor = zlib.compressobj(self.middleware.level, zlib.DEFLATED, 31)
            compressed = await self._compress(body, more)
            start["headers"] = _gzip_headers(start["headers"], None if more else len(compressed))
            await self.send(start)
        else:
            compressed = await self._compress(body, more)
        await self.send({"type": "http.response.body", "body": compressed, "more_body": more})

    def _start(self, message: Message) -> None:
        """Decide what can be decided from the status and headers alone."""
        length: int | None = None
        compressible = message["status"] not in _NOT_COMPRESSED_STATUSES
        for name, value in message.get("headers", ()):
            if name in (b"content-encoding", b"content-range"):
                compressible = False
            elif name == b"content-type":
                compressible = compressible and not value.lower().startswith(_NOT_COMPRESSED_TYPES)
            elif name == b"cache-control" and b"no-transform" in value.lower():
                compressible = False
            elif name == b"content-length" and value.isdigit():
                length = int(value)
        if not compressible:
            self.mode = "identity"
            return
        message["headers"] = _with_vary(message.get("headers", ()))
        if length is not None and length < self.middleware.minimum_size:
            self.mode = "identity"  # the common small answer: no copy, no buffering
        else:
            self.start = message

    async def _compress(self, body: bytes, more: bool) -> bytes:
        compressor = self.compressor
        assert compressor is not None
        flush = zlib.Z_SYNC_FLUSH if more else zlib.Z_FINISH

        def run() -> bytes:
            return compressor.compress(body) + compressor.flush(flush)

        if len(body) >= self.middleware.thread_bytes:
            return await asyncio.to_thread(run)
        return run()


def _with_vary(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` with Accept-Encoding added to Vary (to the one Vary header there is)."""
    out = []
    varied = False
    for name, value in headers:
        if name == b"vary" and not varied:
            varied = True
            if b"accept-encoding" not in value.lower() and value.strip() != b"*":
                out.append((name, value + b", Accept-Encoding"))
                continue
        out.append((name, value))
    if not varied:
        out.append((b"vary", b"Accept-Encoding"))
    return out


def _gzip_headers(
    headers: Iterable[tuple[bytes, bytes]], length: int | None
) -> list[tuple[bytes, bytes]]:
    """The response's headers for a gzip body of `length` bytes (None: streamed, unknown)."""
    out = [(name, value) for name, value in headers if name != b"content-length"]
    out.append((b"content-encoding", b"gzip"))
    if length is not None:
        out.append((b"content-length", b"%d" % length))
    return out
