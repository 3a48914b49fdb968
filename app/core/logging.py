"""Structured logs: one JSON object per line, each carrying the request id it belongs to.

The request id lives in a context variable set by the request middleware (`app.middleware`),
so any log line written while serving a request names it without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

from app.core.config import LogLevel

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else passed in `extra=` is emitted as a field.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
# uvicorn's records carry these for its coloured console output; they duplicate the message.
_DROPPED_ATTRS = frozenset({"color_message"})


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message, request id, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in _DROPPED_ATTRS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request_id={request_id}]" if request_id else line


# What json.dumps(entry, default=str, ensure_ascii=False) builds on every call, built once.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)
_last_second: tuple[int, str] = (-1, "")


def _iso_time(created: float) -> str:
    global _last_second  # noqa: PLW0603 - a one-entry cache: one strftime per second, not per line
    whole = int(created)
    if _last_second[0] != whole:
        _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_last_second[1]}.{int(created % 1 * 1000):03d}Z"


def configure_logging(level: LogLevel = "INFO", fmt: str = "json") -> None:
    """Send every log record (the app's, uvicorn's, libraries') through one formatter.

    Idempotent: replaces only the handler it installed before, so handlers that others put on
    the root logger (pytest's log capture, for one) keep working.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
    # The app writes its own access log, with the request id and timing.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False


_HANDLER_MARK = "_rnn_sentiment_handler"
