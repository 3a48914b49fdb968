"""POST /stream and /stream/ws: a text read piece by piece, the state kept by the client.

The logic lives in `app.streaming`; these routes check the request, map its errors to the
common error shape, and shape the response. The WebSocket's protocol (its messages, close
codes, authentication, rate limits, connection cap and Origin rule) is described, and its
machinery kept, in `app.streaming.websocket`; the endpoint here speaks it: it accepts and
closes the socket, asks the gate (`app.http.security`) about keys and rate limits, and
validates each message with the wire schema `StreamRequest`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_doc, error_responses
from app.api.responses import model_ref, prediction_of, steps_of, token_infos
from app.api.schemas.examples import STREAM_EXAMPLES
from app.api.schemas.stream import StreamRequest, StreamResponse
from app.core.config import Settings
from app.core.errors import ApiError
from app.core.logging import request_id_var
from app.http.errors import error_body, readable_details
from app.http.ratelimit import TokenBucket
from app.http.security import Gate, header
from app.inference.batching import DeadlineExceededError, OverloadedError
from app.inference.runtime import Runtime
from app.inference.slot import ModelSlot
from app.inference.store import ModelStore
from app.streaming.engine import StreamUpdate
from app.streaming.errors import StreamError
from app.streaming.service import StreamService
from app.streaming.websocket import (
    AUTHENTICATED,
    IDLE,
    CloseCode,
    Connections,
    RefusedError,
    not_ready,
    offered_key,
    origin_refusal,
    pace,
    parse_json,
    policy_violation,
    text_of,
    unauthorized,
)

logger = logging.getLogger("app.stream")

router = APIRouter(tags=["streaming"])
# Not behind the API-key dependency: a WebSocket authenticates itself (app.streaming.websocket).
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


@router.post("/stream", responses=error_responses(400, 401, 404, 413, 415, 422, 503) | _CONFLICT)
async def stream(
    body: Annotated[StreamRequest, Body(openapi_examples=STREAM_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> StreamResponse:
    """Read the next piece of a text from the previous piece's state; the server keeps none."""
    with serving_for(request, runtime, body.model) as serving:
        runtime = serving.runtime
        try:
            update = await serving.streams.advance(body.text, body.state, final=body.final)
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


async def _serve_connection(websocket: WebSocket) -> None:
    runtime: Runtime | None = getattr(websocket.state, "runtime", None)
    if runtime is None or not runtime.ready:
        await websocket.accept()
        await _refuse(websocket, not_ready())
        return
    settings = runtime.settings
    gate: Gate = websocket.app.state.api_gate
    headers = websocket.scope["headers"]
    origin = header(headers, b"origin")
    refusal = origin_refusal(
        origin,
        header(headers, b"host"),
        websocket.scope.get("server"),
        settings.cors_origins,
        keyed=bool(gate.keys),
    )
    if refusal is not None:
        logger.warning(
            "websocket refused at the handshake: %s",
            refusal,
            extra={"origin": (origin or b"")[:256].decode("latin-1")},
        )
        await websocket.close(CloseCode.POLICY_VIOLATION)  # before accept: HTTP 403
        return
    # Made by `create_app`: each worker has its own app, so its own count.
    connections: Connections = websocket.app.state.stream_ws_connections
    try:
        connections.enter(settings.stream_ws_max_connections)
    except RefusedError as too_many:
        await websocket.accept()
        await _refuse(websocket, too_many)
        return
    try:
        await websocket.accept()
        await _converse(websocket, runtime, settings, gate)
    finally:
        connections.leave()


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
            await _refuse(websocket, unauthorized())
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
                await _refuse(websocket, unauthorized(timeout_s))
            else:
                await websocket.close(CloseCode.GOING_AWAY, IDLE)
            return
        if message["type"] == "websocket.disconnect":
            return
        try:
            text = text_of(message, settings.stream_ws_max_message_bytes)
            pace(limiter)
            if caller is None:
                caller = _authenticate(parse_json(text), gate, client)
                await websocket.send_text(AUTHENTICATED)
                continue
            _admit(gate, caller)
            payload = parse_json(text)
        except RefusedError as refusal:
            await _refuse(websocket, refusal)
            return
        # Each message is answered by the model served when it arrives (after a reload, a
        # state from the previous model is refused like any foreign state: 409 in the answer).
        runtime, streams = _serving(websocket, runtime, streams)
        with runtime.held():
            answer = await _answer(websocket, payload, runtime, streams)
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


def _admit(gate: Gate, caller: str) -> None:
    """One request from the caller's bucket, shared with its HTTP requests, or `RefusedError`."""
    try:
        gate.admit(caller)
    except ApiError as error:
        raise policy_violation(error.code, error.message) from None


def _authenticate(payload: Any, gate: Gate, client: Any) -> str:
    """The caller's rate-limit identity, from a first message `{"api_key": "<key>"}`."""
    key = offered_key(payload)
    if key is not None:
        with contextlib.suppress(ApiError):
            return gate.caller_for_key(key, client)
    raise unauthorized()


# ---------------------------------------------------------------------------------------------
# Answers


async def _answer(
    websocket: WebSocket, payload: Any, runtime: Runtime, streams: StreamService
) -> str | None:
    """The response to one message, or None once the connection was closed for it."""
    try:
        body = StreamRequest.model_validate(payload)
    except ValidationError as error:
        details = readable_details(
            [
                {**error_detail, "loc": ("message", *error_detail.get("loc", ()))}
                for error_detail in error.errors(include_url=False)
            ],
            StreamRequest,
            where="message",
        )
        await _close(
            websocket,
            CloseCode.POLICY_VIOLATION,
            "validation_error",
            _summary(details),
            details,
        )
        return None
    if body.model is not None and body.model != runtime.model.name:
        store: ModelStore = websocket.state.store
        try:
            serving = store.serving(body.model)
        except ApiError as error:
            code = CloseCode.TRY_AGAIN_LATER if error.status_code == 503 else None
            await _close(
                websocket,
                code or CloseCode.POLICY_VIOLATION,
                error.code,
                error.message,
                error.details,
            )
            return None
        with serving.runtime.held():
            return await _advance(websocket, body, serving.runtime, serving.streams)
    return await _advance(websocket, body, runtime, streams)


async def _advance(
    websocket: WebSocket, body: StreamRequest, runtime: Runtime, streams: StreamService
) -> str | None:
    """`body` read by `runtime`'s model: the answer, or None once the connection was closed."""
    try:
        update = await streams.advance(body.text, body.state, final=body.final)
    except StreamError as error:
        api_error = _api_error(error, "message")
        await _close(
            websocket,
            CloseCode.POLICY_VIOLATION,
            api_error.code,
            api_error.message,
            api_error.details,
        )
        return None
    except (OverloadedError, DeadlineExceededError) as error:
        unavailable = runtime.unavailable(error)
        await _close(websocket, CloseCode.TRY_AGAIN_LATER, unavailable.code, unavailable.message)
        return None
    return _response(update, runtime).model_dump_json()


async def _refuse(websocket: WebSocket, refusal: RefusedError) -> None:
    await _close(websocket, refusal.code, refusal.error_code, refusal.message)


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
    prediction = update.prediction
    return StreamResponse.model_construct(
        state=update.state,
        position=update.position,
        token_count=update.token_count,
        tokens=token_infos(update.tokens, update.ids, unk),
        steps=steps_of(update.steps),
        pending=token_infos(update.pending, update.pending_ids, unk),
        pending_steps=steps_of(update.pending_steps),
        prediction=(None if prediction is None else prediction_of(prediction)),
        final=update.final,
        model=model_ref(runtime.model),
    )
