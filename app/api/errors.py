"""The errors each route documents in /openapi.json: the common error schema, with an example.

The bodies themselves are built by `app.http.errors`, for documentation as for real errors.
"""

from __future__ import annotations

from typing import Any

from app.api.schemas.common import ErrorResponse
from app.http.errors import DEFAULT_MESSAGES, error_shape

# The example for each status the shared documentation covers: code, message, details.
_EXAMPLES: dict[int, tuple[str, str, list[dict[str, Any]]]] = {
    400: ("malformed_json", DEFAULT_MESSAGES[400], []),
    401: ("unauthorized", DEFAULT_MESSAGES[401], []),
    404: (
        "model_not_found",
        "No model named 'tweets'. Known models: default, reviews.",
        [
            {
                "loc": ["body", "model"],
                "msg": "known models: default, reviews",
                "type": "unknown_model",
            }
        ],
    ),
    413: ("body_too_large", "The request body exceeds the limit of 1048576 bytes.", []),
    415: ("unsupported_media_type", DEFAULT_MESSAGES[415], []),
    422: (
        "validation_error",
        "body.text: text must contain at least one non-whitespace character",
        [
            {
                "loc": ["body", "text"],
                "msg": "text must contain at least one non-whitespace character",
                "type": "empty_text",
            }
        ],
    ),
    503: ("overloaded", "Too many requests are waiting for the model; retry later.", []),
}
_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON",
    401: "Missing or wrong API key (only when the service has API keys)",
    404: "The request names a model this service does not hold (GET /models lists them)",
    413: "Body larger than APP_MAX_BODY_BYTES",
    415: "Body is not JSON",
    422: "Invalid input or a limit exceeded",
    503: "Not ready, overloaded or past the request deadline (see Retry-After)",
}
_EXAMPLE_REQUEST_ID = "4c1d7f0e9a2b4f6c"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error model with an example for each status."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, message, details = _EXAMPLES[status]
        responses.update(error_doc(status, _DESCRIPTIONS[status], code, message, details))
    return responses


def error_doc(
    status: int,
    description: str,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry for one error a route documents itself, with its example."""
    example = error_shape(code, message, details or [], _EXAMPLE_REQUEST_ID)
    return {
        status: {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"example": example}},
        }
    }
