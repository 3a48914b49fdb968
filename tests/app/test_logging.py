"""Log lines: one JSON object each (text on a terminal), written once per event-loop turn,
none lost or reordered."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.core.config import LogFormat, Settings
from app.core.logging import (
    JsonFormatter,
    LoopBatchingHandler,
    TextFormatter,
    _iso_time,
    configure_logging,
    request_id_var,
    resolve_format,
)
from app.core.metrics import Metrics
from app.http import middleware
from tests.app.test_server import REPO, free_port, server_env, stop


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, CountingStream, LoopBatchingHandler]]:
    stream = CountingStream()
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.propagate = True


@contextmanager
def request_id(value: str) -> Iterator[None]:
    """Lines logged inside belong to request `value`."""
    token = request_id_var.set(value)
    try:
        yield
    finally:
        request_id_var.reset(token)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_of_one_loop_turn_go_out_in_one_write(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged

    async def main() -> int:
        for n in range(5):
            logger.info("line %d", n, extra={"n": n})
        written_during_the_turn = stream.writes
        await asyncio.sleep(0)  # the next turn writes them
        return written_during_the_turn

    assert asyncio.run(main()) == 0
    assert stream.writes == 1
    assert [line["message"] for line in lines(stream)] == [f"line {n}" for n in range(5)]
    assert [line["n"] for line in lines(stream)] == list(range(5))


def test_a_line_from_another_thread_is_written_at_once_after_those_queued(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged

    async def main() -> list[str]:
        logger.info("on the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        seen = [line["message"] for line in lines(stream)]  # before the loop's turn ends
        await asyncio.sleep(0)
        return seen

    assert asyncio.run(main()) == ["on the loop", "from a thread"]
    assert [line["message"] for line in lines(stream)] == ["on the loop", "from a thread"]


def test_without_a_loop_every_line_is_written_at_once(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged
    logger.info("first")
    assert [line["message"] for line in lines(stream)] == ["first"]
    logger.warning("second")
    assert [(line["message"], line["level"]) for line in lines(stream)] == [
        ("first", "INFO"),
        ("second", "WARNING"),
    ]


def test_a_loop_that_stopped_before_writing_does_not_hold_back_the_next_loops_lines(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged
    loop = asyncio.new_event_loop()

    async def last_turn() -> None:
        logger.info("logged in the loop's last turn")
        loop.stop()  # the write scheduled for the next turn never runs

    task = loop.create_task(last_turn())
    loop.run_forever()
    assert task.done()
    loop.close()
    assert lines(stream) == []

    async def main() -> None:
        logger.info("next loop")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert [line["message"] for line in lines(stream)] == [
        "logged in the loop's last turn",
        "next loop",
    ]


def test_flush_writes_what_is_still_queued(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, handler = logged

    async def main() -> None:
        logger.info("queued")
        handler.flush()  # as logging.shutdown does at exit
        assert [line["message"] for line in lines(stream)] == ["queued"]

    asyncio.run(main())
    assert stream.writes == 1


def test_a_line_names_its_request_and_keeps_what_orjson_cannot_encode(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged
    with request_id("req-1"):
        logger.info("odd values", extra={"big": 2**70, "thing": object, "text": "ünï 👍"})
    (line,) = lines(stream)
    assert line["request_id"] == "req-1"
    assert line["big"] == 2**70
    assert line["thing"] == str(object)
    assert line["text"] == "ünï 👍"
    assert line["logger"] == "tests.logging"


# -- the access log: one line per request, through logging like any other ----------------------


@pytest.fixture
def access_log() -> Iterator[tuple[logging.Logger, io.StringIO, LoopBatchingHandler]]:
    """The middleware's access logger, writing JSON to a stream of its own."""
    stream = io.StringIO()
    handler = LoopBatchingHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = middleware.access_logger
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream, handler
    logger.removeHandler(handler)
    logger.filters.clear()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def request_through_the_middleware(path: str, request_id_header: bytes) -> None:
    """One GET answered 204 by a bare app behind `RequestMiddleware`, on a loop of its own."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "headers": [(b"x-request-id", request_id_header)],
        "client": ("10.1.2.3", 5000),
    }
    guarded = middleware.RequestMiddleware(app, metrics=Metrics(), max_body_bytes=100)

    async def main() -> None:
        await guarded(scope, receive, send)
        await asyncio.sleep(0)  # the handler writes the turn's lines

    asyncio.run(main())


ISO_UTC_MILLISECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_a_request_writes_one_access_line_with_its_fields_and_request_id(
    access_log: tuple[logging.Logger, io.StringIO, LoopBatchingHandler],
) -> None:
    _, stream, _ = access_log
    request_through_the_middleware("/p%d/ünï", b"req-2")  # a path is not a format string
    (line,) = lines(stream)
    assert ISO_UTC_MILLISECONDS.fullmatch(str(line.pop("time")))
    duration_ms = line.pop("duration_ms")
    assert isinstance(duration_ms, float)
    assert line.pop("message") == f"GET /p%d/ünï 204 {duration_ms:.2f}ms"
    assert line == {
        "level": "INFO",
        "logger": "app.access",
        "request_id": "req-2",
        "method": "GET",
        "path": "/p%d/ünï",
        "route": middleware.UNMATCHED_ROUTE,
        "status": 204,
        "client": "10.1.2.3",
    }


@pytest.mark.parametrize("setup", ["second-handler", "text-format", "filtered", "warning"])
def test_the_access_line_is_an_ordinary_record_that_logging_set_up_governs(
    access_log: tuple[logging.Logger, io.StringIO, LoopBatchingHandler], setup: str
) -> None:
    logger, stream, handler = access_log
    seen: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    capture = Capture()
    if setup == "second-handler":
        logger.addHandler(capture)
    elif setup == "text-format":
        handler.setFormatter(TextFormatter())
    elif setup == "filtered":
        logger.addFilter(lambda record: not record.getMessage().startswith("GET /secret"))
    else:
        logger.setLevel(logging.WARNING)
    try:
        request_through_the_middleware("/secret", b"req-3")
    finally:
        logger.removeHandler(capture)
    written = stream.getvalue()
    if setup == "second-handler":
        (record,) = seen
        assert record.getMessage().startswith("GET /secret 204 ")
        assert (record.path, record.status) == ("/secret", 204)  # type: ignore[attr-defined]
        assert json.loads(written)["path"] == "/secret"
    elif setup == "text-format":
        assert "INFO" in written
        assert "GET /secret 204 " in written
        assert "[request_id=req-3]" in written
        assert not written.startswith("{")
    else:
        assert written == ""


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (0.5, "1970-01-01T00:00:00.500Z"),
        (1_700_000_000.0, "2023-11-14T22:13:20.000Z"),
        (1_700_000_000.9999, "2023-11-14T22:13:20.999Z"),  # never rounds up to .1000
    ],
)
def test_a_line_gives_its_time_in_utc_to_the_millisecond(created: float, expected: str) -> None:
    assert _iso_time(created) == expected


# --- APP_LOG_FORMAT=auto: text on a terminal, JSON otherwise -------------------------------------


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class Closed(io.StringIO):
    def isatty(self) -> bool:
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize(
    ("fmt", "stream", "expected"),
    [
        ("auto", Terminal(), "text"),
        ("auto", io.StringIO(), "json"),
        ("auto", Closed(), "json"),
        ("json", Terminal(), "json"),
        ("text", io.StringIO(), "text"),
    ],
)
def test_auto_is_text_on_a_terminal_and_json_otherwise(
    fmt: LogFormat, stream: io.StringIO, expected: str
) -> None:
    assert resolve_format(fmt, stream) == expected


def test_auto_is_the_default() -> None:
    assert Settings.model_fields["log_format"].default == "auto"


def test_configure_logging_picks_the_formatter_for_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    level = root.level
    try:
        for stream, formatter in ((Terminal(), TextFormatter), (io.StringIO(), JsonFormatter)):
            monkeypatch.setattr(sys, "stderr", stream)
            configure_logging("INFO", "auto")
            (ours,) = [h for h in root.handlers if isinstance(h, LoopBatchingHandler)]
            assert ours.stream is stream
            assert type(ours.formatter) is formatter
    finally:
        for handler in [h for h in root.handlers if isinstance(h, LoopBatchingHandler)]:
            root.removeHandler(handler)
        root.setLevel(level)


TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING) +[\w.]+: ")


def _server_lines(checkpoint: Path, stderr_on_a_terminal: bool, timeout_s: float = 60) -> list[str]:
    """The lines `python -m app` writes up to "ready", with APP_LOG_FORMAT unset (auto): its
    stdout and stderr a pseudo-terminal, or a pipe."""
    port = free_port()
    env = server_env(checkpoint, port)
    env.pop("APP_LOG_FORMAT")
    if stderr_on_a_terminal:
        reader, writer = os.openpty()
    else:
        reader, writer = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=writer,
        stderr=writer,
        start_new_session=True,
    )
    os.close(writer)
    output = b""
    try:
        deadline = time.monotonic() + timeout_s
        while b"ready" not in output and time.monotonic() < deadline:
            readable, _, _ = select.select([reader], [], [], 0.5)
            if readable:
                try:
                    chunk = os.read(reader, 65536)
                except OSError:  # the pty's other side closed: the server exited
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        stop(process)
        os.close(reader)
    text = output.decode("utf-8", "replace").replace("\r\n", "\n")
    assert "ready" in text, text
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_server_on_a_terminal_writes_text(checkpoints: dict[str, Path]) -> None:
    lines = _server_lines(checkpoints["gru"], stderr_on_a_terminal=True)
    logged = [line for line in lines if TEXT_LINE.match(line)]
    assert any(line.endswith("app.main: ready") for line in logged), lines
    assert not any(line.startswith("{") for line in lines), lines


@pytest.mark.slow
def test_a_server_writing_to_a_pipe_writes_json(checkpoints: dict[str, Path]) -> None:
    lines = _server_lines(checkpoints["gru"], stderr_on_a_terminal=False)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    # Not necessarily the last: uvicorn's "Application startup complete." follows within
    # milliseconds and may arrive in the same read.
    ready = {"logger": "app.main", "message": "ready"}.items()
    assert any(ready <= record.items() for record in records), records
