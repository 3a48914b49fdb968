"""POST /stream and /stream/ws: a text read piece by piece, the state kept by the client.

The logic lives in `app.streaming`; these routes check the request, map its errors to the
common error shape, and shape the response.

WebSocket protocol (`/stream/ws`): every text message is a JSON object, the same as a
`POST /stream` body; every answer is the same as its response. A bad message gets one error
message in the common shape, then the connection is closed with a code and the error code as
the reason: 1003 for a binary message, 1007 for a message that is not JSON, 1009 for one over
`APP_STREAM_WS_MAX_MESSAGE_BYTES`, 1008 for an invalid message or state, a missing or wrong API
key, or more messages than `APP_STREAM_WS_RATE` / `APP_STREAM_WS_BURST` allow, 1013 when the
model is not ready or too busy, 1001 after `APP_STREAM_WS_IDLE_TIMEOUT_S` of silence.

With `APP_API_KEYS` set, a WebSocket client authenticates with `Authorization: Bearer <key>` on
the handshake, or, since browsers cannot set that header, with a first message
`{"api_key": "<key>"}`, answered by `{"authenticated": true}`. Keys are never read from the
URL: URLs end up in logs.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette import status

from app.api.deps import InferenceRuntimeDep
from app.api.responses import prediction_of, token_infos
from app.batching import DeadlineExceededError, OverloadedError
from app.core.logging import request_id_var
from app.errors import ApiError, error_body, error_doc, error_responses
from app.runtime import Runtime
from app.schemas import (
    STREAM_EXAMPLES,
    Step,
    StreamRequest,
    StreamResponse,
)
from app.serving import ModelSlot
from app.streaming import RateLimiter, StreamError, StreamService, StreamUpdate

logger = logging.getLogger("app.stream")

router = APIRouter(tags=["streaming"])
# Not behind the API-key dependency: a WebSocket authenticates itself (see the module doc).
ws_router = APIRouter()

_STATE_MISMATCH = (
    "the state was made by another model version than the one this service runs; start a new stream"
)
_CONFLICT = error_doc(
    409,
    "The served model cannot continue this stream: the state is from another model version, "
    "or the model is bidirectional",
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


async def _serve_connection(websocket: WebSocket) -> None:
    await websocket.accept()
    runtime: Runtime | None = getattr(websocket.state, "runtime", None)
    if runtime is None or not runtime.ready:
        await _close(
            websocket,
            status.WS_1013_TRY_AGAIN_LATER,
            "not_ready",
            "The model is not loaded yet; retry later.",
        )
        return
    streams: StreamService = websocket.state.streams
    settings = runtime.settings
    keys = [key.get_secret_value().encode("utf-8") for key in settings.api_keys]
    authenticated = not keys
    header = websocket.headers.get("authorization")
    if keys and header is not None:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not _known_key(credentials, keys):
            await _close(websocket, status.WS_1008_POLICY_VIOLATION, "unauthorized", _UNAUTHORIZED)
            return
        authenticated = True
    limiter = RateLimiter(settings.stream_ws_rate, settings.stream_ws_burst)
    while True:
        try:
            async with asyncio.timeout(settings.stream_ws_idle_timeout_s):
                message = await websocket.receive()
        except TimeoutError:
            await websocket.close(status.WS_1001_GOING_AWAY, "idle")
            return
        if message["type"] == "websocket.disconnect":
            return
        try:
            payload = _payload(message, settings.stream_ws_max_message_bytes, limiter)
            if not authenticated:
                _authenticate(payload, keys)
                authenticated = True
                await websocket.send_text('{"authenticated":true}')
                continue
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
    """The runtime and streams served now (`app.serving`); those given when there is no slot."""
    slot: ModelSlot | None = getattr(websocket.state, "slot", None)
    serving = slot.current if slot is not None else None
    return (runtime, streams) if serving is None else (serving.runtime, serving.streams)


def _payload(message: Mapping[str, Any], max_bytes: int, limiter: RateLimiter) -> Any:
    """The JSON in a received message, or `_RefusedError` saying why it is refused."""
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
    if not limiter.allow():
        raise _RefusedError(
            status.WS_1008_POLICY_VIOLATION,
            "rate_limited",
            f"More than {limiter.rate:g} messages per second (bursts of {limiter.burst}); "
            "slow down.",
        )
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _RefusedError(
            status.WS_1007_INVALID_FRAME_PAYLOAD_DATA,
            "malformed_json",
            "The message is not valid JSON.",
        ) from None


def _authenticate(payload: Any, keys: Sequence[bytes]) -> None:
    offered = payload.get("api_key") if isinstance(payload, dict) else None
    if not (isinstance(offered, str) and len(payload) == 1 and _known_key(offered, keys)):
        raise _RefusedError(status.WS_1008_POLICY_VIOLATION, "unauthorized", _UNAUTHORIZED)


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


def _known_key(offered: str, keys: Sequence[bytes]) -> bool:
    candidate = offered.encode("utf-8", "surrogatepass")
    matched = False
    for key in keys:  # every key compared: the timing tells nothing
        matched |= hmac.compare_digest(candidate, key)
    return matched


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

    def steps(items: list[tuple[str, dict[str, float]]]) -> list[Step]:
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
