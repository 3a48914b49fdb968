"""`StreamError`: why a piece or a state cannot be used, raised by the codec and the engine.

It carries what the API layer needs to answer in the common error shape (an HTTP-like status,
a stable code and type, a message, the request field at fault) without this package knowing
anything of HTTP: the routes map it (`app.api.routes.stream`).
"""

from __future__ import annotations


class StreamError(Exception):
    """A piece the stream cannot take: HTTP-like `status`, stable `code` and `type`, a message.

    `field` is the request field at fault ("text" or "state"), or None for the whole request.
    """

    def __init__(
        self, status: int, code: str, type_: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.type = type_
        self.message = message
        self.field = field


def invalid_state(type_: str, message: str) -> StreamError:
    """A state that cannot be read on: 422 `invalid_state`, `type_` saying why."""
    return StreamError(422, "invalid_state", type_, message, "state")


def too_much(type_: str, message: str) -> StreamError:
    """A piece over one of the limits: 422 `validation_error` on the text."""
    return StreamError(422, "validation_error", type_, message, "text")
