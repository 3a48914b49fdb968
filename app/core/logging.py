"""Logs: one JSON object per line for machines, a readable line for a person at a terminal.

Either way each line carries the request id it belongs to. `APP_LOG_FORMAT=auto` (the default)
picks by where the lines go: text when stderr is a terminal, JSON when it is a pipe or a file
(a container's log driver, systemd, a log shipper), so nobody has to set it for either case.

The request id lives in a context variable set by the request middleware (`app.http.middleware`),
so any log line written while serving a request names it without passing it around.

An access log line is written for every request, so its cost counts. Three things keep it
small: lines are encoded with orjson; the logging module is told not to look up the caller's
file and line, thread and process for every record (its documented optimisation flags: no
formatter here prints them); and `LoopBatchingHandler` writes the lines of one event-loop turn
in one write instead of one write and flush per line. A line waits at most until the loop's
next turn; lines logged outside the event loop's thread are written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import sys
import time
import traceback
from typing import Any, Literal, TextIO

import orjson

from app.core.config import LogFormat, LogLevel

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
        return _dumps(entry)


def _dumps(entry: dict[str, Any]) -> str:
    try:
        return orjson.dumps(entry, default=str).decode()
    except TypeError:  # what orjson refuses (an int beyond 64 bits, say), json takes
        return json.dumps(entry, default=str, ensure_ascii=False)


def _iso_time(created: float) -> str:
    """A record's time as ISO 8601 in UTC, to the millisecond: "2024-05-01T12:00:00.123Z"."""
    whole_seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{whole_seconds}.{int(created % 1 * 1000):03d}Z"


# Control characters (C0, DEL, C1, and the Unicode line and paragraph separators) as escapes:
# a client-supplied value in a text line (a decoded path with %0a, say) cannot start a line.
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


class TextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, with the request id when there is one; control
    characters in a line are escaped (a traceback after it keeps its own line breaks)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return super().formatMessage(record).translate(_CONTROL_ESCAPES)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = request_id_var.get()
        return f"{line} [request_id={request_id}]" if request_id else line


class LoopBatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines logged during one event-loop turn in one write.

    On the loop's thread a line is queued and a write is scheduled for the loop's next turn
    (once per turn); on any other thread, or with no loop running, the queue is written at
    once, so lines stay in order. `flush()` (also called at exit by `logging.shutdown`) writes
    whatever is queued.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        # The loop a write is scheduled on. Kept rather than a flag: a loop that stops before
        # its next turn never runs the write, and the next loop must then schedule its own.
        self._flush_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)
            return
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self.lock:  # type: ignore[union-attr]
            self._pending.append(line)
            if loop is not None:
                if self._flush_on is not loop:
                    self._flush_on = loop
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._flush_on = None
            if not self._pending:
                return
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except Exception:  # a closed or broken stream loses these lines, nothing else
                if logging.raiseExceptions:
                    with contextlib.suppress(Exception):
                        traceback.print_exc(file=sys.stderr)


def resolve_format(fmt: LogFormat, stream: TextIO | None = None) -> Literal["json", "text"]:
    """The format `fmt` means for lines written to `stream` (default: stderr): "auto" is
    text on a terminal, JSON otherwise (also when the stream cannot say what it is)."""
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return "json"


def configure_logging(level: LogLevel = "INFO", fmt: LogFormat = "auto") -> None:
    """Send every log record (the app's, uvicorn's, libraries') through one formatter.

    The one place logging is set up: `python -m app` calls it first thing, the server
    (`app.http.server`) in each process it runs, after uvicorn and gunicorn have pointed their
    loggers at handlers of their own, and the app's lifespan with its settings. Idempotent:
    replaces only the handler it installed before (after writing what that one still held), so
    handlers that others put on the root logger (pytest's log capture, for one) keep working.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            handler.flush()
            root.removeHandler(handler)
    # No formatter here prints a record's source line, thread or process: skip looking them up.
    logging._srcfile = None  # documented in the logging HOWTO, "Optimization"
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = LoopBatchingHandler()  # on stderr
    text = resolve_format(fmt, handler.stream) == "text"
    handler.setFormatter(TextFormatter() if text else JsonFormatter())
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
