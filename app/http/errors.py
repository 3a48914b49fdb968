"""One error shape for every non-2xx response, and the handlers that produce it.

    {"error": {"code": "...", "message": "...", "details": [...]}, "request_id": "..."}

`code` is stable and machine-readable; `message` is a short sentence for people; `details`
lists field-level problems (422) and is empty otherwise. No traceback ever reaches a client.
How the routes document these errors in /openapi.json is the API layer's part (`app.api.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
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


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    # The offending input is left out on purpose: it can be large, or private.
    return [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error["type"]}
        for error in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure a request can meet to the common error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc.status_code, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        details = _validation_details(exc)
        if any(detail["type"] == "json_invalid" for detail in details):
            return error_response(400, "malformed_json", DEFAULT_MESSAGES[400], details)
        return error_response(422, "validation_error", summarise(details), details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        if status in (408, 413) and isinstance(exc.detail, str) and exc.detail.startswith("The "):
            message = exc.detail
        else:
            # FastAPI's and Starlette's own details ("Not Found", "There was an error parsing
            # the body") are replaced by messages written for this API's clients.
            message = DEFAULT_MESSAGES.get(status, "HTTP error.")
        return error_response(
            status, ERROR_CODES.get(status, "http_error"), message, headers=exc.headers
        )
