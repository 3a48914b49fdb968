"""POST /predict's common case, answered without FastAPI's routing, dependencies and serialisation.

Under load one worker process is bound by its event loop, not by the model, and most of the
loop's time per request is framework work: route matching, dependency solving, body parsing
into Python objects and validating them, validating the response again and serialising it,
and the middleware layers around all that. For the request
that makes up nearly all the traffic (a valid JSON body, from an authorised client, while the
model is ready) this module does only what the answer needs: read the body, validate it with
the same `PredictRequest` model straight from JSON bytes, check the caller with the same
`Gate` as the routes (`app.http.security`: key, then rate limit), predict through the same
`Runtime.predict`, and write the body the route writes too (`app.api.responses.predict_body`).

Anything it is not sure about goes to FastAPI unchanged, with the body replayed: a body that
does not validate, a content type that is not JSON, a caller without a valid key, a CORS
request, a model that is not ready, a request naming a model other than the default. So
every error keeps its exact status, shape and message;
`ApiError`s raised while predicting (a text over a limit, 503 overloaded) are rendered by the
same `error_response` as FastAPI's exception handler uses. The request middleware
(`app.http.middleware`) still wraps both paths: request id, body limit, metrics, access log.
`APP_FAST_PATH=false` sends every request through FastAPI.

A canary and a shadow (`app.inference.rollout`) apply here as on the route: a request that
names no model may be answered by the canary, and the texts the default answered are handed to
the shadow once the answer is written. Without them, each costs one attribute check.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app.api.responses import predict_body
from app.api.schemas.predict import PredictRequest
from app.core.errors import ApiError
from app.http.errors import error_response
from app.http.security import Gate, is_json
from app.inference.rollout import Canary, Shadow
from app.inference.runtime import Runtime

PATH = "/predict"
_JSON_HEADERS = (b"content-type", b"application/json")


class PredictFastPath:
    """Answers well-formed POST /predict requests; hands back anything else (see module doc)."""

    def __init__(
        self,
        gate: Gate,
        *,
        cors: bool = False,
        canary: Canary | None = None,
        shadow: Shadow | None = None,
    ) -> None:
        self._gate = gate
        self._cors = cors
        self._canary = canary
        self._shadow = shadow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Answer the request (None), or return the `receive` to give the app instead."""
        runtime: Runtime | None = scope.get("state", {}).get("runtime")
        if runtime is None or not runtime.ready or not self._headers_ok(scope["headers"]):
            return receive
        try:
            caller = self._gate.caller(scope["headers"], scope.get("client"))
        except ApiError:
            return receive  # FastAPI refuses it, in its own order of checks
        messages: list[Message] = []
        chunks: list[bytes] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return _replay(messages, receive)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            request = PredictRequest.model_validate_json(b"".join(chunks))
        except ValidationError:
            return _replay(messages, receive)
        if request.model is not None and request.model != runtime.model.name:
            return _replay(messages, receive)  # another model of the store: the route picks it
        texts, field = (
            ([request.text], "text") if request.text is not None else (request.texts or [], "texts")
        )
        chosen = runtime
        try:
            self._gate.admit(caller)
            canary = self._canary
            if canary is not None and request.model is None:  # after admit, as on the route
                chosen = _canary_or(canary, runtime, scope)
            predictions = await chosen.predict(texts, field=field)
        except ApiError as error:
            response = error_response(
                error.status_code, error.code, error.message, error.details, error.headers
            )
            await response(scope, receive, send)
            return None
        finally:
            if chosen is not runtime:
                chosen.in_flight -= 1
        threshold = (  # the request's, else the setting's
            chosen.settings.min_confidence
            if request.min_confidence is None
            else request.min_confidence
        )
        body = predict_body(
            predictions, chosen.model, batch=request.text is None, min_confidence=threshold
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON_HEADERS, (b"content-length", b"%d" % len(body))],
            }
        )
        await send({"type": "http.response.body", "body": body})
        shadow = self._shadow
        if shadow is not None and chosen is runtime:  # the default answered: off to the shadow
            shadow.launch(scope["state"]["store"], texts, predictions)
        return None

    def _headers_ok(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        content_type = None
        for name, value in headers:
            # The first of repeated headers counts, as in Starlette's `Headers.get`.
            if name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"origin" and self._cors:
                return False  # CORS requests go through CORSMiddleware
        return is_json(content_type)


def _canary_or(canary: Canary, runtime: Runtime, scope: Scope) -> Runtime:
    """The runtime of the canary when it takes this request (counted in flight on it, as the
    middleware counts the default's, until the prediction is made), else `runtime`."""
    serving = canary.pick(scope["state"]["store"])
    if serving is None:
        return runtime
    serving.runtime.in_flight += 1
    return serving.runtime


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that hands out `messages` again, then carries on with `receive`."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
