"""The errors the service reports to its clients, as plain exceptions.

Raised anywhere (the inference runtime refuses a text over a limit, a full queue answers
503), they carry an HTTP status, a stable code and a message; the HTTP layer
(`app.http.errors`) renders every one of them in the common error shape. Nothing here
imports a web framework, so the layers below HTTP can raise them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class ApiError(Exception):
    """An error a route reports to its client; rendered as the common error shape."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = list(details)
        self.headers = dict(headers or {})


class InvalidInputError(ApiError):
    """422 for input that is well-formed but breaks a limit or cannot be read."""

    def __init__(self, details: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(422, "validation_error", summarise(details), details=details)


class UnavailableError(ApiError):
    """503 with Retry-After: not ready, overloaded or past the request's deadline."""

    def __init__(self, code: str, message: str, retry_after_s: int) -> None:
        super().__init__(503, code, message, headers={"Retry-After": str(retry_after_s)})


def summarise(details: Sequence[Mapping[str, Any]]) -> str:
    """The first few field problems in one line, for an error's message."""
    parts = []
    for detail in details[:3]:
        loc = ".".join(str(part) for part in detail.get("loc", ()))
        parts.append(f"{loc}: {detail.get('msg', '')}" if loc else str(detail.get("msg", "")))
    more = len(details) - 3
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")
