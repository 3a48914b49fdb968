"""Log lines: one JSON object each, written once per event-loop turn, none lost or reordered."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from app.core.logging import (
    JsonFormatter,
    LoopBatchingHandler,
    TextFormatter,
    log_info_line,
    request_id_var,
)


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


FIELDS = {"method": "POST", "path": "/p%d", "status": 200, "duration_ms": 0.5, "big": 2**70}


def test_a_direct_line_is_the_line_logging_writes(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler],
) -> None:
    logger, stream, _ = logged
    with request_id("req-2"):
        log_info_line(logger, "POST /p%d 200", FIELDS)
        logger.info("POST /p%d 200", extra=FIELDS)
    direct, logged_line = lines(stream)
    assert direct.pop("time") <= logged_line.pop("time")  # both ISO, UTC, milliseconds
    assert list(direct) == list(logged_line)  # same fields, same order
    assert direct == logged_line
    assert direct["request_id"] == "req-2"
    assert direct["big"] == 2**70


@pytest.mark.parametrize("setup", ["second-handler", "text-format", "filtered", "warning"])
def test_a_direct_line_goes_through_logging_when_anything_else_could_see_it(
    logged: tuple[logging.Logger, CountingStream, LoopBatchingHandler], setup: str
) -> None:
    logger, stream, handler = logged
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
        logger.addFilter(lambda record: not record.getMessage().startswith("secret"))
    else:
        logger.setLevel(logging.WARNING)
    try:
        log_info_line(logger, "secret line", FIELDS)
    finally:
        logger.removeHandler(capture)
        logger.filters.clear()
        handler.setFormatter(JsonFormatter())
        logger.setLevel(logging.INFO)
    written = stream.getvalue()
    if setup == "second-handler":
        assert [record.getMessage() for record in seen] == ["secret line"]
        assert json.loads(written)["message"] == "secret line"
    elif setup == "text-format":
        assert "INFO" in written
        assert "secret line" in written
        assert not written.startswith("{")
    else:
        assert written == ""
