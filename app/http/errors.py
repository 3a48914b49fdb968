"""One error shape for every non-2xx response, and the handlers that produce it.

    {"error": {"code": "...", "message": "...", "details": [...]}, "request_id": "..."}

`code` is stable and machine-readable; `message` is a short sentence for people; `details`
lists field-level problems (422) and is empty otherwise. No traceback ever reaches a client.
How the routes document these errors in /openapi.json is the API layer's part (`app.api.errors`).

One documented exception: under /v2, the Open Inference Protocol's routes
(`app.api.routes.v2`), every error has that protocol's shape instead, `{"error": "<message>"}`,
so that its clients read it (`v2_error_response`). The status is the one the native API would
send, except that a request the native API refuses with 422 is a 400 there, as the protocol
asks.

Messages are written for someone who has to fix the request. pydantic's own wording for the
mistakes people make most ("Extra inputs are not permitted", "Input should be a valid
dictionary...") is replaced, from the route's request model, by what to send instead
(`readable_details`): the detail's `type` and `loc` stay pydantic's, so programs that read them
see no change. An unknown route or method answers with where the API reference is.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from app.core.errors import ApiError, summarise
from app.core.logging import request_id_var

ERROR_CODES: dict[int, str] = {
    400: "malformed_json",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
DEFAULT_MESSAGES: dict[int, str] = {
    400: "The request body is not valid JSON.",
    401: "A valid API key is required: send 'Authorization: Bearer <key>'.",
    404: "No such resource.",
    405: "Method not allowed for this resource.",
    408: "The request body did not arrive in time.",
    413: "The request body is too large.",
    415: "Request bodies must be JSON: send 'Content-Type: application/json'.",
    422: "The request is not valid.",
    429: "Too many requests; retry later.",
    500: "Internal server error.",
    503: "The service is unavailable; retry later.",
}


class BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in, as soon as it passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds the limit of {limit} bytes.")


class BodyTimeout(StarletteHTTPException):
    """Raised when the next piece of a body does not arrive within the stall timeout, or the
    whole body within its deadline (`whole`)."""

    def __init__(self, timeout_s: float, *, whole: bool = False) -> None:
        detail = (
            f"The request body did not arrive within {timeout_s:g} seconds."
            if whole
            else f"The request body stalled for more than {timeout_s:g} seconds."
        )
        super().__init__(408, detail)


def error_shape(
    code: str, message: str, details: Sequence[Mapping[str, Any]], request_id: str | None
) -> dict[str, Any]:
    """The common error shape: every error body, and every error example in /openapi.json."""
    return {
        "error": {"code": code, "message": message, "details": list(details)},
        "request_id": request_id,
    }


def error_body(
    code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    request_id: str | None = None,
) -> bytes:
    """The common error shape, serialised; `request_id` defaults to the current request's."""
    return orjson.dumps(
        error_shape(
            code, message, details, request_id if request_id is not None else request_id_var.get()
        )
    )


def error_response(
    status_code: int,
    code: str,
    message: str,
    details: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(code, message, details),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


V2_PREFIX = "/v2"


def is_v2(scope: Mapping[str, Any]) -> bool:
    """Whether a request is under /v2 (below the app's root path, when it has one)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path == V2_PREFIX or path.startswith(V2_PREFIX + "/")


def v2_error_response(
    status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """An error in the Open Inference Protocol's shape; a 422 becomes its 400."""
    return Response(
        orjson.dumps({"error": message}),
        status_code=400 if status_code == 422 else status_code,
        headers=headers,
        media_type="application/json",
    )


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The offending input is left out on purpose: it can be large, or private.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error["type"]}
        for error in exc.errors()
    ]


# pydantic's error types for "this is not an object" (lax and strict mode, models and dicts).
_NOT_AN_OBJECT = frozenset({"model_attributes_type", "model_type", "dict_type"})
_JSON_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "true or false"),  # before int: a bool is an int
    (list, "an array"),
    (str, "a string"),
    (int, "a number"),
    (float, "a number"),
)


def readable_details(
    errors: Sequence[Mapping[str, Any]], model: type[BaseModel] | None, where: str = "body"
) -> list[dict[str, Any]]:
    """pydantic's `errors()` for a request validated with `model`, as the common `details`.

    `where` is the first element of each `loc` (the request's body, or a WebSocket message).
    An unknown field, a body that is not an object, a missing body or field, and an empty list
    get messages that say what to send, built from `model`'s fields; every other message is
    pydantic's or the model's own. The offending input is never echoed back: it can be large,
    or private.
    """
    details = []
    for error in errors:
        loc = list(error.get("loc", ()))
        msg = error.get("msg", "")
        if model is not None and loc[:1] == [where]:
            msg = _reworded(error, loc[1:], model) or msg
        details.append({"loc": loc, "msg": msg, "type": error["type"]})
    return details


def _reworded(error: Mapping[str, Any], path: list[Any], model: type[BaseModel]) -> str | None:
    """A message for `error` at `path` inside the body that says what to send, or None."""
    kind = error["type"]
    if not path:
        if kind in _NOT_AN_OBJECT:
            return f"expected a JSON object, not {_json_kind(error.get('input'))}: " + (
                f"send {expected_body(model)}"
            )
        if kind == "missing":
            return f"expected a JSON object, not an empty body or null: send {expected_body(model)}"
        return None
    if len(path) != 1 or not isinstance(path[0], str):
        return None  # inside a field's value: pydantic's words name the problem there
    name = path[0]
    if kind == "extra_forbidden":
        return f"unknown field: send {expected_body(model)}{_other_fields(model)}"
    if kind == "missing":
        return f"required: send {expected_body(model)}"
    if kind == "too_short" and error.get("ctx", {}).get("field_type") == "List":
        wanted = int(error["ctx"].get("min_length", 1))
        item = name[:-1] if name.endswith("s") and not name.endswith("ss") else "item"
        if wanted == 1:
            return f"'{name}' is empty: send at least one {item}"
        return f"'{name}' has too few items: send at least {wanted}"
    return None


def expected_body(model: type[BaseModel]) -> str:
    """The object `model` accepts, sketched: `{"text": "..."}`.

    Its required fields (all its fields when none is required), or, for a model whose
    `alternatives` names fields of which exactly one must be sent, one sketch per alternative:
    `{"text": "..."} or {"texts": ["...", ...]}`.
    """
    alternatives: Sequence[str] = getattr(model, "alternatives", ())
    if alternatives:
        return " or ".join(_sketch(model, [name]) for name in alternatives)
    return _sketch(model, _shown_fields(model))


def _shown_fields(model: type[BaseModel]) -> list[str]:
    """The fields `expected_body` sketches."""
    alternatives: Sequence[str] = getattr(model, "alternatives", ())
    required = [name for name, field in model.model_fields.items() if field.is_required()]
    return list(alternatives or required or model.model_fields)


def _sketch(model: type[BaseModel], names: Sequence[str]) -> str:
    fields = model.model_fields
    pairs = (f'"{name}": {_placeholder(fields[name].annotation)}' for name in names)
    return "{" + ", ".join(pairs) + "}"


def _placeholder(annotation: Any) -> str:
    """A JSON placeholder for a value of `annotation`: "...", ["...", ...], 0, true."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        present = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _placeholder(present[0]) if len(present) == 1 else '"..."'
    if origin is typing.Annotated:
        return _placeholder(typing.get_args(annotation)[0])
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        return f"[{_placeholder(item)}, ...]"
    if annotation is bool:
        return "true"
    if annotation in (int, float):
        return "0"
    return '"..."'


def _other_fields(model: type[BaseModel]) -> str:
    """The accepted fields `expected_body` leaves out, as "; optional: 'a', 'b'"."""
    shown = set(_shown_fields(model))
    others = [name for name in model.model_fields if name not in shown]
    return "; optional: " + ", ".join(f"'{name}'" for name in others) if others else ""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    for python_type, kind in _JSON_KINDS:
        if isinstance(value, python_type):
            return kind
    return "this value"


def _body_model(request: Request) -> type[BaseModel] | None:
    """The request model of the route that refused the request, when it has one."""
    field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# A path echoed in a message is cut to this many characters: it comes from the client.
_PATH_CHARS = 200


def _no_route(
    request: Request, exc: StarletteHTTPException, docs_path: str | None
) -> tuple[str, list[dict[str, Any]]]:
    """404 and 405: what was asked for, and where the API reference is (or that it is off)."""
    method = request.method[:16]
    path = request.url.path
    if len(path) > _PATH_CHARS:
        path = path[:_PATH_CHARS] + "..."
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        what = f"{method} is not allowed on {path}" + (f": use {allowed}" if allowed else "")
        detail: dict[str, Any] = {"loc": ["method"], "msg": what, "type": "method_not_allowed"}
    else:
        routed = request.scope.get("endpoint") is not None or "route" in request.scope
        what = f"Nothing at {method} {path}" if routed else f"No route {method} {path}"
        detail = {"loc": ["path"], "msg": what, "type": "not_found"}
    if docs_path is None:
        return f"{what}. The API reference is turned off here (APP_DOCS=false).", [detail]
    root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    url = f"{root.rstrip('/')}{docs_path}"
    detail["url"] = url
    return f"{what}. The API reference is at {url}.", [detail]


def install_error_handlers(app: FastAPI, *, docs_path: str | None = "/docs") -> None:
    """Map every failure a request can meet to the common error shape.

    `docs_path` is where the API reference is served (None: it is not), for 404 and 405.
    """

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if is_v2(request.scope):
            return v2_error_response(exc.status_code, exc.message, exc.headers)
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc)
        malformed = any(detail["type"] == "json_invalid" for detail in details)
        if not malformed:
            details = readable_details(exc.errors(), _body_model(request))
        if is_v2(request.scope):
            return v2_error_response(
                400, DEFAULT_MESSAGES[400] if malformed else summarise(details)
            )
        if malformed:
            return error_response(400, "malformed_json", DEFAULT_MESSAGES[400], details)
        return error_response(422, "validation_error", summarise(details), details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        details: list[dict[str, Any]] = []
        if status in (408, 413) and isinstance(exc.detail, str) and exc.detail.startswith("The "):
            message = exc.detail
        elif status in (404, 405):
            message, details = _no_route(request, exc, docs_path)
        else:
            # FastAPI's and Starlette's own details ("Not Found", "There was an error parsing
            # the body") are replaced by messages written for this API's clients.
            message = DEFAULT_MESSAGES.get(status, "HTTP error.")
        if is_v2(request.scope):
            return v2_error_response(status, message, exc.headers)
        return error_response(
            status, ERROR_CODES.get(status, "http_error"), message, details, headers=exc.headers
        )
