"""What the client raises: `SentimentError` and its subclasses, and the mapping from an error
response to the subclass that names it.

`APIConnectionError` means the service could not be reached; an error response becomes an
`APIError` subclass chosen by its status (and, for streams and unknown models, its code),
carrying the error body's `code`, `message`, `details` and `request_id`, so callers can catch
the case they handle and read the rest without parsing anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import httpx
from pydantic import ValidationError

from rnn_sentiment_client._models import ErrorDetail, ErrorResponse
from rnn_sentiment_client._retry import retry_after

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "NotFoundError",
    "RateLimitedError",
    "SentimentError",
    "ServerError",
    "StreamStateError",
    "UnavailableError",
    "error_from",
]


class SentimentError(Exception):
    """Anything the client could not do."""


class APIConnectionError(SentimentError):
    """The service could not be reached, or did not answer in time (after the retries)."""


class APIError(SentimentError):
    """The service answered with an error: its status and the common error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = list(details)
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIError):
    """400 malformed JSON, 413 body too large or 415 not JSON: a bug in how it was sent."""


class AuthenticationError(APIError):
    """401: the API key is missing or wrong."""


class NotFoundError(APIError):
    """404 or 405: no such route on this service (an older version, or a wrong URL), or no
    such model (`ModelNotFoundError`)."""


# How the service names the models it holds: a detail `"known models: a, b"` of type
# `unknown_model`, and the message's `"Known models: a, b."`.
_KNOWN_MODELS = re.compile(r"known models: (?P<names>.*?)\.?$", re.IGNORECASE)


class ModelNotFoundError(NotFoundError):
    """404 `model_not_found`: the request named a model the service does not hold.

    `known` lists the names the service holds, as its answer says them (empty when the answer
    does not say); GET /models describes each.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            status_code,
            code,
            message,
            details=details,
            request_id=request_id,
            retry_after=retry_after,
        )
        self.known = _known_models(message, self.details)


def _known_models(message: str, details: Sequence[ErrorDetail]) -> list[str]:
    """The names in the detail of type `unknown_model`, else in the message."""
    texts = [detail.msg for detail in details if detail.type == "unknown_model"] + [message]
    for text in texts:
        found = _KNOWN_MODELS.search(text)
        if found:
            return [name.strip() for name in found["names"].split(",") if name.strip()]
    return []


class ConflictError(APIError):
    """409: the served model cannot do this (e.g. a bidirectional model cannot stream)."""


class InvalidRequestError(APIError):
    """422: the input breaks a rule or a limit; `details` says which field and why."""


class StreamStateError(APIError):
    """The stream cannot continue from this state (422 `invalid_state`, or 409
    `state_model_mismatch` after a model change): start a new stream."""


class RateLimitedError(APIError):
    """429: too many requests (after the retries)."""


class UnavailableError(APIError):
    """503: not ready or overloaded (after the retries); see `retry_after`."""


class ServerError(APIError):
    """Any other 5xx."""


_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    405: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}
# Codes that mean "this stream is over" whatever the status they come with.
_STREAM_STATE_CODES = frozenset({"invalid_state", "state_model_mismatch"})
# Codes with an error of their own, whatever the status they come with.
_ERRORS_BY_CODE: dict[str, type[APIError]] = {
    **dict.fromkeys(_STREAM_STATE_CODES, StreamStateError),
    "model_not_found": ModelNotFoundError,
}


def error_from(response: httpx.Response) -> APIError:
    """The typed error for an error response, from its body when it has the common shape."""
    status = response.status_code
    try:
        body = ErrorResponse.model_validate_json(response.content)
        code, message = body.error.code, body.error.message
        details: list[ErrorDetail] = body.error.details
        request_id = body.request_id
    except ValidationError:
        # Not this API's body: a proxy or load balancer answered.
        code = f"http_{status}"
        message = response.text[:200].strip() or response.reason_phrase
        details = []
        request_id = response.headers.get("x-request-id")
    kind = _ERRORS_BY_CODE.get(code) or _ERRORS_BY_STATUS.get(
        status, ServerError if status >= 500 else APIError
    )
    return kind(
        status,
        code,
        message,
        details=details,
        request_id=request_id,
        retry_after=retry_after(response),
    )
