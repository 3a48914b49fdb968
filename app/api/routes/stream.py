"""POST /stream and /stream/ws: a text read piece by piece, the state kept by the client.

The logic lives in `app.streaming`; these routes check the request, map its errors to the
common error shape, and shape the response.

WebSocket protocol (`/stream/ws`): every text message is a JSON object, the same as a
`POST /stream` body; every answer is the same as its response. A refused message gets one
error message in the common shape, then the connection is closed with a code and the error
code as the reason: 1003 for a binary message, 1007 for a message that is not JSON, 1008 for an
invalid message or state, a missing or wrong API key (`unauthorized`) or too many messages
(`rate_limited`), 1013 when the model is not ready or too busy or the worker holds too many
connections (`too_many_connections`). Two closes come without an error message: 1001 `idle`
after `APP_STREAM_WS_IDLE_TIMEOUT_S` of silence, and 1009 for a message over
`APP_STREAM_WS_MAX_MESSAGE_BYTES`, which the server (`app.http.server`: uvicorn's `ws_max_size`)
refuses from its frame header, before buffering it; the route checks the size again (1009
`message_too_big`, with the error message) in case it runs under a server without that limit.

Authentication. With `APP_API_KEYS` set, a client sends `Authorization: Bearer <key>` on the
handshake, checked by `app.http.security` as on every HTTP route; or, since browsers cannot set that
header, `{"api_key": "<key>"}` as its first message, answered by `{"authenticated": true}`,
within `APP_STREAM_WS_AUTH_TIMEOUT_S` of the handshake. A wrong key, any other first message,
or none in time closes the connection with 1008 `unauthorized`. Keys are never read from the
URL: URLs end up in logs.

Rate limits. Every message after authentication counts against the caller's
`APP_RATE_LIMIT_PER_MINUTE` bucket as one HTTP request does: the same bucket as the caller's
HTTP requests (its key's, or its address's when the service has no keys). The authentication
message does not count, as a refused HTTP request does not. A message over the limit is not
read: the client gets `rate_limited` (its message says when to retry) and the connection is
closed with 1008. Keeping the connection open would not save the client anything: the piece
was not read, so it must be sent again from the same state after the wait anyway, and one rule
(a refused message ends the connection) is simpler to handle than two. Each connection also
has its own message rate (`APP_STREAM_WS_RATE`, bursts of `APP_STREAM_WS_BURST`), refused the
same way.

Connections. A worker holds at most `APP_STREAM_WS_MAX_CONNECTIONS` sockets. One past it is
accepted and at once closed with 1013 `too_many_connections`, after the error message. Refusing
it at the handshake would cost a little less, but a browser reports a refused handshake only
as close code 1006, the same as a network failure; 1013 "try again later" with a reason tells
every client what happened and what to do.

Origin. Browsers let any page open a WebSocket to any server, and send the page's origin with
the handshake (`Origin`); without a check, any site a user visits could use a service they can
reach and the site cannot, such as one on their own machine (cross-site WebSocket hijacking). A
handshake with an `Origin` is accepted when the origin is listed in `APP_CORS_ORIGINS` (scheme,
host and port; `*` lists every origin), or has the host and port of the handshake's `Host`: the
page is one the service serves itself. The scheme is not compared, as a TLS-terminating proxy
in front makes it differ; a `Host` without a port matches its name on any port, as a proxy may
drop the port (nginx's `$host` does), and to a browser another port of the same name is the
same site anyway (it shares its cookies). Anything else is refused at the handshake (HTTP 403)
and logged.
Clients that send no `Origin` (anything but a browser) are not affected.

DNS rebinding defeats the same-origin rule on its own: a page at `http://attacker.test:8000`
whose name the attacker then points at 127.0.0.1 sends `attacker.test:8000` as both `Origin` and
`Host`. With API keys set the page gets nowhere (it has no key to authenticate with). Without
keys, a connection that arrived on a loopback address, the usual target, passes the same-origin
rule only when `Host` names `localhost` or an IP address, which no DNS answer can re-point; a
page reached through a name (a proxy on the same machine, say) needs its origin listed in
`APP_CORS_ORIGINS`. Elsewhere (on another address, and on every HTTP route) a service without
keys answers whatever page or client reaches it: keys, or a proxy that accepts only the
service's own names, are what protect it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

import orjson
from fastapi import APIRouter, Body, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette import status
from starlette.types import Scope

from app.api.deps import InferenceRuntimeDep
from app.api.responses import prediction_of, token_infos
from app.core.config import Settings
from app.core.logging import request_id_var
from app.http.errors import ApiError, error_body, error_doc, error_responses
from app.http.ratelimit import TokenBucket
from app.http.security import Gate, header, rate_identity
from app.inference.batching import DeadlineExceededError, OverloadedError
from app.inference.runtime import Runtime
from app.inference.slot import ModelSlot
from app.schemas import (
    STREAM_EXAMPLES,
    Step,
    StreamRequest,
    StreamResponse,
)
from app.streaming.engine import StreamStep, StreamUpdate
from app.streaming.errors import StreamError
from app.streaming.service import StreamService

logger = logging.getLogger("app.stream")

router = APIRouter(tags=["streaming"])
# Not behind the API-key dependency: a WebSocket authenticates itself (see the module doc).
ws_router = APIRouter()

_STATE_MISMATCH = (
    "the state was made by another model version than the one this service runs; start a new stream"
)
_CONFLICT = error_doc(
    409,
    "The served model cannot continue this stream: the state is from another model version or "
    "precision, or the model is bidirectional",
    "state_model_mismatch",
    f"state: {_STATE_MISMATCH}",
    [{"loc": ["body", "state"], "msg": _STATE_MISMATCH, "type": "state_model_mismatch"}],
)


def _streams(request: Request) -> StreamService:
    streams: StreamService = request.state.streams
    return streams


@router.post("/stream", responses=error_responses(400, 401, 413, 415, 422, 503) | _CONFLICT)
async def stream(
    body: Annotated[StreamRequest, Body(openapi_examples=STREAM_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> StreamResponse:
    """Read the next piece of a text from the previous piece's state; the server keeps none."""
    try:
        update = await _streams(request).advance(body.text, body.state, final=body.final)
    except StreamError as error:
        raise _api_error(error, "body") from None
    except (OverloadedError, DeadlineExceededError) as error:
        raise runtime.unavailable(error) from None
    return _response(update, runtime)


@ws_router.websocket("/stream/ws")
async def stream_ws(websocket: WebSocket) -> None:
    """Live typing: /stream's messages over one connection."""
    token = request_id_var.set(os.urandom(8).hex())  # the connection's id, in logs and errors
    try:
        await _serve_connection(websocket)
    except WebSocketDisconnect:
        pass  # the client left; nothing to answer
    finally:
        request_id_var.reset(token)


class _RefusedError(Exception):
    """Close the connection with `code`, after an error message with `error_code`."""

    def __init__(self, code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error_code = error_code
        self.message = message


_UNAUTHORIZED = (
    "A valid API key is required: send 'Authorization: Bearer <key>' on the handshake, "
    'or {"api_key": "<key>"} as the first message.'
)


class _Sockets:
    """The /stream/ws connections open in this worker (one event loop: no lock needed)."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0


def _sockets(websocket: WebSocket) -> _Sockets:
    """This app's count, made with the first connection (each worker has its own app)."""
    state = websocket.app.state
    sockets: _Sockets | None = getattr(state, "stream_ws_sockets", None)
    if sockets is None:
        sockets = _Sockets()
        state.stream_ws_sockets = sockets
    return sockets


async def _serve_connection(websocket: WebSocket) -> None:
    runtime: Runtime | None = getattr(websocket.state, "runtime", None)
    if runtime is None or not runtime.ready:
        await websocket.accept()
        await _close(
            websocket,
            status.WS_1013_TRY_AGAIN_LATER,
            "not_ready",
            "The model is not loaded yet; retry later.",
        )
        return
    settings = runtime.settings
    gate: Gate = websocket.app.state.api_gate
    refusal = _origin_refusal(websocket.scope, settings.cors_origins, keyed=bool(gate.keys))
    if refusal is not None:
        origin = header(websocket.scope["headers"], b"origin") or b""
        logger.warning(
            "websocket refused at the handshake: %s",
            refusal,
            extra={"origin": origin[:256].decode("latin-1")},
        )
        await websocket.close(status.WS_1008_POLICY_VIOLATION)  # before accept: HTTP 403
        return
    sockets = _sockets(websocket)
    if sockets.open >= settings.stream_ws_max_connections:
        await websocket.accept()
        await _close(
            websocket,
            status.WS_1013_TRY_AGAIN_LATER,
            "too_many_connections",
            f"This server holds {settings.stream_ws_max_connections} WebSocket connections "
            "already; retry later.",
        )
        return
    sockets.open += 1  # counted before the first await, so no handshake can slip past the cap
    try:
        await websocket.accept()
        await _converse(websocket, runtime, settings, gate)
    finally:
        sockets.open -= 1


async def _converse(websocket: WebSocket, runtime: Runtime, settings: Settings, gate: Gate) -> None:
    streams: StreamService = websocket.state.streams
    scope = websocket.scope
    client = scope.get("client")
    # The caller's rate-limit identity (`app.http.security`); None until it has authenticated.
    caller: str | None = None
    if not gate.keys or header(scope["headers"], b"authorization") is not None:
        try:
            caller = gate.caller(scope["headers"], client)
        except ApiError:
            await _close(websocket, status.WS_1008_POLICY_VIOLATION, "unauthorized", _UNAUTHORIZED)
            return
    limiter = TokenBucket(settings.stream_ws_rate, settings.stream_ws_burst)
    while True:
        timeout_s = settings.stream_ws_idle_timeout_s
        if caller is None:
            timeout_s = min(timeout_s, settings.stream_ws_auth_timeout_s)
        try:
            async with asyncio.timeout(timeout_s):
                message = await websocket.receive()
        except TimeoutError:
            if caller is None:
                await _close(
                    websocket,
                    status.WS_1008_POLICY_VIOLATION,
                    "unauthorized",
                    f"{_UNAUTHORIZED} None arrived within {timeout_s:g} seconds.",
                )
            else:
                await websocket.close(status.WS_1001_GOING_AWAY, "idle")
            return
        if message["type"] == "websocket.disconnect":
            return
        try:
            text = _text(message, settings.stream_ws_max_message_bytes)
            _pace(limiter)
            if caller is None:
                caller = _authenticate(_json(text), gate, client)
                await websocket.send_text('{"authenticated":true}')
                continue
            _admit(gate, caller)
            payload = _json(text)
        except _RefusedError as refusal:
            await _close(websocket, refusal.code, refusal.error_code, refusal.message)
            return
        # Each message is answered by the model served when it arrives (after a reload, a
        # state from the previous model is refused like any foreign state: 409 in the answer).
        runtime, streams = _serving(websocket, runtime, streams)
        runtime.in_flight += 1
        try:
            answer = await _answer(websocket, payload, runtime, streams)
        finally:
            runtime.in_flight -= 1
        if answer is None:
            return
        await websocket.send_text(answer)


def _serving(
    websocket: WebSocket, runtime: Runtime, streams: StreamService
) -> tuple[Runtime, StreamService]:
    """The runtime and streams served now (`app.inference.slot`); those given when there is
    no slot."""
    slot: ModelSlot | None = getattr(websocket.state, "slot", None)
    serving = slot.current if slot is not None else None
    return (runtime, streams) if serving is None else (serving.runtime, serving.streams)


def _text(message: Mapping[str, Any], max_bytes: int) -> str:
    """The text of a received message, or `_RefusedError` for a binary or oversized one."""
    text = message.get("text")
    if text is None:
        raise _RefusedError(
            status.WS_1003_UNSUPPORTED_DATA,
            "unsupported_data",
            "Send JSON objects as text messages, not binary ones.",
        )
    # Characters first: a str of n characters has at least n UTF-8 bytes.
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise _RefusedError(
            status.WS_1009_MESSAGE_TOO_BIG,
            "message_too_big",
            f"The message exceeds the limit of {max_bytes} bytes.",
        )
    return str(text)


def _pace(limiter: TokenBucket) -> None:
    """One message from the connection's own bucket, or `_RefusedError`."""
    if limiter.acquire() > 0:
        raise _RefusedError(
            status.WS_1008_POLICY_VIOLATION,
            "rate_limited",
            f"More than {limiter.rate:g} messages per second (bursts of {limiter.burst:g}); "
            "slow down.",
        )


def _admit(gate: Gate, caller: str) -> None:
    """One request from the caller's bucket, shared with its HTTP requests, or `_RefusedError`."""
    try:
        gate.admit(caller)
    except ApiError as error:
        raise _RefusedError(status.WS_1008_POLICY_VIOLATION, error.code, error.message) from None


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _RefusedError(
            status.WS_1007_INVALID_FRAME_PAYLOAD_DATA,
            "malformed_json",
            "The message is not valid JSON.",
        ) from None


def _authenticate(payload: Any, gate: Gate, client: Any) -> str:
    """The caller's rate-limit identity, from a first message `{"api_key": "<key>"}`."""
    offered = payload.get("api_key") if isinstance(payload, dict) else None
    if isinstance(offered, str) and len(payload) == 1:
        identity = gate.keys.match_key(offered.encode("utf-8", "surrogatepass"))
        if identity is not None:
            return rate_identity(identity, client)
    raise _RefusedError(status.WS_1008_POLICY_VIOLATION, "unauthorized", _UNAUTHORIZED)


# ---------------------------------------------------------------------------------------------
# Origin (see the module doc)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 without brackets), port


def _parse_origin(value: str) -> _Origin | None:
    """A serialised origin ("https://a.test:8443"), or None for "null" or anything else."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    return scheme, parts.hostname, _DEFAULT_PORTS[scheme] if port is None else port


def _parse_host(value: str) -> tuple[str, int | None] | None:
    """A `Host` header's name and port (None when it has none), or None if it is not one."""
    try:
        parts = urlsplit("//" + value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query:
        return None
    return parts.hostname, port


@lru_cache(maxsize=8)
def _listed(origins: tuple[str, ...]) -> tuple[bool, frozenset[_Origin], frozenset[str]]:
    """`APP_CORS_ORIGINS` as (every origin listed, parsed origins, the rest as written)."""
    parsed = {origin: _parse_origin(origin) for origin in origins}
    return (
        "*" in origins,
        frozenset(value for value in parsed.values() if value is not None),
        frozenset(origin.strip().lower() for origin, value in parsed.items() if value is None),
    )


def _origin_refusal(scope: Scope, cors_origins: tuple[str, ...], *, keyed: bool) -> str | None:
    """Why a handshake's `Origin` is refused, or None when it is accepted (or absent)."""
    headers = scope["headers"]
    raw = header(headers, b"origin")
    if raw is None:
        return None
    value = raw.decode("latin-1")
    every, listed, listed_as_written = _listed(cors_origins)
    origin = _parse_origin(value)
    if every or origin in listed or value.strip().lower() in listed_as_written:
        return None
    host_value = header(headers, b"host")
    host = None if host_value is None else _parse_host(host_value.decode("latin-1"))
    if origin is None or host is None or not _same_host(origin, host):
        return "the page's origin is neither this service's nor one in APP_CORS_ORIGINS"
    if not keyed and _on_loopback(scope) and not _unrebindable(host[0]):
        return (
            "a page reached through a DNS name on a loopback address without API keys "
            "(possible DNS rebinding); list its origin in APP_CORS_ORIGINS"
        )
    return None


def _same_host(origin: _Origin, host: tuple[str, int | None]) -> bool:
    _, origin_name, origin_port = origin
    name, port = host
    return name == origin_name and (port is None or port == origin_port)


def _on_loopback(scope: Scope) -> bool:
    """Whether the connection arrived on a loopback address of this machine."""
    server = scope.get("server")
    try:
        address = ipaddress.ip_address(str(server[0])) if server else None
    except ValueError:
        return False  # a Unix socket, or a name: not a TCP loopback address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def _unrebindable(name: str) -> bool:
    """Names no DNS answer can point elsewhere: IP addresses, and localhost (resolved locally)."""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Answers


async def _answer(
    websocket: WebSocket, payload: Any, runtime: Runtime, streams: StreamService
) -> str | None:
    """The response to one message, or None once the connection was closed for it."""
    try:
        body = StreamRequest.model_validate(payload)
    except ValidationError as error:
        details = [
            {
                "loc": ["message", *error_detail.get("loc", ())],
                "msg": error_detail.get("msg", ""),
                "type": error_detail["type"],
            }
            for error_detail in error.errors(include_url=False, include_input=False)
        ]
        await _close(
            websocket,
            status.WS_1008_POLICY_VIOLATION,
            "validation_error",
            _summary(details),
            details,
        )
        return None
    try:
        update = await streams.advance(body.text, body.state, final=body.final)
    except StreamError as error:
        api_error = _api_error(error, "message")
        await _close(
            websocket,
            status.WS_1008_POLICY_VIOLATION,
            api_error.code,
            api_error.message,
            api_error.details,
        )
        return None
    except (OverloadedError, DeadlineExceededError) as error:
        unavailable = runtime.unavailable(error)
        await _close(
            websocket, status.WS_1013_TRY_AGAIN_LATER, unavailable.code, unavailable.message
        )
        return None
    return _response(update, runtime).model_dump_json()


async def _close(
    websocket: WebSocket,
    code: int,
    error_code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
) -> None:
    """Say why in the common error shape, then close with `code` and the error code."""
    logger.info("closing websocket: %s", message, extra={"code": code, "error": error_code})
    await websocket.send_text(error_body(error_code, message, details).decode("utf-8"))
    await websocket.close(code, error_code)


def _summary(details: Sequence[Mapping[str, Any]]) -> str:
    first = details[0]
    text = f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    return text + (f" (and {len(details) - 1} more)" if len(details) > 1 else "")


def _api_error(error: StreamError, where: str) -> ApiError:
    details = (
        []
        if error.field is None
        else [{"loc": [where, error.field], "msg": error.message, "type": error.type}]
    )
    message = _summary(details) if details else error.message
    return ApiError(error.status, error.code, message, details=details)


def _response(update: StreamUpdate, runtime: Runtime) -> StreamResponse:
    unk = runtime.predictor.vocab.unk_id

    def steps(items: list[StreamStep]) -> list[Step]:
        return [Step.model_construct(label=label, probabilities=p) for label, p in items]

    prediction = update.prediction
    return StreamResponse.model_construct(
        state=update.state,
        position=update.position,
        token_count=update.token_count,
        tokens=token_infos(update.tokens, update.ids, unk),
        steps=steps(update.steps),
        pending=token_infos(update.pending, update.pending_ids, unk),
        pending_steps=steps(update.pending_steps),
        prediction=(None if prediction is None else prediction_of(prediction)),
        final=update.final,
        model=runtime.model,
    )
