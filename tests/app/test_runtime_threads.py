"""Where the work runs: batches on the event loop (default), traces always on a thread, large
requests' tokenizing on a thread of its own, passes within a budget measured at start-up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.core.errors import InvalidInputError, UnavailableError
from app.core.metrics import Metrics
from app.inference import runtime as runtime_module
from app.inference.batching import OverloadedError, PassBudget
from app.inference.predictor import Predictor
from app.inference.runtime import (
    CALIBRATION_ROWS,
    CALIBRATION_STEPS,
    LOOP_TEXT_CHARS,
    Runtime,
    pass_budget,
)
from training.tokenizer import tokenize

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("inference_thread", "batches_on", "traces_on"),
    [
        pytest.param(False, "MainThread", "trace", id="batches-on-the-loop"),
        pytest.param(True, "inference", "inference", id="one-inference-thread"),
    ],
)
async def test_a_long_trace_never_holds_the_event_loop(
    make_settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    inference_thread: bool,
    batches_on: str,
    traces_on: str,
) -> None:
    seen: list[str] = []
    original = Predictor.predict_ids

    def recording(self: Predictor, batch: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(self, batch)

    monkeypatch.setattr(Predictor, "predict_ids", recording)
    runtime = Runtime.load(make_settings("lstm", inference_thread=inference_thread), Metrics())
    await runtime.start()
    try:
        await runtime.predict(["fine"], field="text")
        trace_thread = await runtime.tracer.run(lambda: threading.current_thread().name)
    finally:
        await runtime.stop()
    assert seen[-1].startswith(batches_on)
    assert trace_thread.startswith(traces_on)


# -- encoding off the loop, passes within a budget ---------------------------------------------


def _recording_threads(monkeypatch: pytest.MonkeyPatch, method: str) -> list[str]:
    """The names of the threads `Predictor.<method>` runs on, from now on."""
    seen: list[str] = []
    original = getattr(Predictor, method)

    def recording(self: Predictor, *args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Predictor, method, recording)
    return seen


@pytest.fixture
async def runtime(make_settings: Any) -> AsyncIterator[Runtime]:
    started = Runtime.load(make_settings("lstm"), Metrics())
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def test_a_small_request_is_encoded_on_the_loop(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recording_threads(monkeypatch, "encode_ids")
    text = "a fine film " * (LOOP_TEXT_CHARS // 24)  # two of them: just within the budget
    await runtime.predict(["I love this film"], field="text")
    await runtime.predict([text, text], field="texts")
    assert seen == ["MainThread"] * 3


async def test_a_large_request_is_encoded_on_the_encoding_thread(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recording_threads(monkeypatch, "encode_ids")
    text = "wonderful " * (LOOP_TEXT_CHARS // 10 + 1)  # one text over the budget
    small = await runtime.predict(["a fine film"], field="text")
    large = await runtime.predict([text, "a fine film"], field="texts")
    assert seen[0] == "MainThread"
    assert [name.split("_")[0] for name in seen[1:]] == ["encode", "encode"]
    assert large[1] == small[0]  # the same answer wherever it was encoded


async def test_texts_refused_for_their_length_do_not_count(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recording_threads(monkeypatch, "encode_ids")
    too_long = "x" * (runtime.settings.max_text_chars + 1)  # refused before tokenizing
    with pytest.raises(InvalidInputError) as raised:
        await runtime.predict([too_long] * 8 + ["fine"], field="texts")
    assert seen == ["MainThread"] * 9
    assert [detail["loc"] for detail in raised.value.details] == [
        ["body", "texts", index] for index in range(8)
    ]


async def test_a_large_request_gets_the_same_422_off_the_loop(runtime: Runtime) -> None:
    many_tokens = "! " * (runtime.settings.max_tokens + 1)  # 514 characters, too many tokens
    texts = ["fine", many_tokens, "", many_tokens, many_tokens]
    assert sum(map(len, texts)) > LOOP_TEXT_CHARS
    with pytest.raises(InvalidInputError) as raised:
        await runtime.predict(texts, field="texts")
    assert [(detail["loc"], detail["type"]) for detail in raised.value.details] == [
        (["body", "texts", 1], "too_many_tokens"),
        (["body", "texts", 2], "no_tokens"),
        (["body", "texts", 3], "too_many_tokens"),
        (["body", "texts", 4], "too_many_tokens"),
    ]


async def test_traces_and_explanations_of_long_texts_are_encoded_off_the_loop(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _recording_threads(monkeypatch, "encode")
    long_text = "wonderful " * (LOOP_TEXT_CHARS // 10 + 1)
    options: dict[str, Any] = {"all_layers": False, "include_cell": False, "decimals": 3}
    await runtime.trace("a fine film", **options)
    await runtime.trace(long_text, **options)
    await runtime.explain(
        long_text,
        label=None,
        methods=["occlusion"],
        steps=4,
        baseline="zeros",
        replacement="unk",
        decimals=3,
    )
    assert [name.split("_")[0] for name in seen] == ["MainThread", "encode", "encode"]


async def test_tokenize_follows_the_same_rule(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = runtime_module.split_tokens

    def recording(text: str) -> Any:
        seen.append(threading.current_thread().name)
        return original(text)

    monkeypatch.setattr(runtime_module, "split_tokens", recording)
    short, long = "I don't love it :)", "I don't love it :) " * 60
    assert await runtime.tokenize(short) == tokenize(short)
    assert await runtime.tokenize(long) == tokenize(long)
    assert [name.split("_")[0] for name in seen] == ["MainThread", "encode"]


async def test_a_full_encoding_queue_is_a_503(make_settings: Any) -> None:
    # One large request may wait while another is encoded (64 // 64).
    runtime = Runtime.load(make_settings("lstm", queue_size=64, max_batch_size=64), Metrics())
    await runtime.start()
    gate = threading.Event()
    try:
        chars = LOOP_TEXT_CHARS + 1
        running = asyncio.ensure_future(runtime.text_work(chars, lambda: gate.wait(5)))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(runtime.text_work(chars, lambda: "second"))
        await asyncio.sleep(0.01)
        with pytest.raises(UnavailableError) as raised:
            await runtime.predict(["a fine film " * 100] * 2, field="texts")
        assert raised.value.code == "overloaded"
        assert raised.value.headers == {"Retry-After": str(runtime.settings.retry_after_s)}
        with pytest.raises(UnavailableError, match="overloaded"):
            await runtime.tokenize("a fine film " * 100)
        with pytest.raises(OverloadedError):  # as from the model's queues, for stream routes
            await runtime.text_work(chars, lambda: "third")
        assert await runtime.text_work(0, lambda: "on the loop") == "on the loop"
        gate.set()
        assert await running is True
        assert await waiting == "second"
    finally:
        gate.set()
        await runtime.stop()


async def test_start_gives_the_batcher_a_measured_pass_budget(runtime: Runtime) -> None:
    budget = runtime.batcher.budget
    assert budget is not None
    # The tiny model is fast: a full batch of texts of a few dozen tokens fits one pass.
    assert budget.longest_for(runtime.settings.max_batch_size) >= 32


class ClockedModel:
    """A stand-in predictor whose passes take `steps * (per_step + rows * per_cell)` seconds of
    a fake clock, so the calibration's arithmetic can be checked exactly."""

    def __init__(self, per_step: float, per_cell: float) -> None:
        self.vocab = list(range(100))
        self.per_step, self.per_cell = per_step, per_cell
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def predict_ids(self, batch: list[list[int]]) -> list[None]:
        steps = max(map(len, batch))
        self.now += steps * (self.per_step + len(batch) * self.per_cell)
        return [None] * len(batch)


def test_pass_budget_keeps_a_pass_to_the_time_given(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ClockedModel(per_step=40e-6, per_cell=10e-6)
    monkeypatch.setattr(runtime_module.time, "perf_counter", model.clock)
    budget = pass_budget(model, 0.025)  # type: ignore[arg-type]
    assert budget.cells == pytest.approx(2500)  # 25 ms at 10 us a cell
    assert budget.step_rows == pytest.approx(4)  # a step costs as much as four rows
    # 256 steps * (5 + 4) rows * 10 us = 23 ms; a sixth row would take it to 25.6 ms.
    assert budget.rows(256) == 5
    assert budget.longest_for(64) == 36  # 36 * 68 * 10 us = 24.5 ms


def test_pass_budget_survives_timings_that_do_not_add_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = ClockedModel(per_step=40e-6, per_cell=0.0)  # noise: 32 rows no slower than one
    monkeypatch.setattr(runtime_module.time, "perf_counter", model.clock)
    budget = pass_budget(model, 0.025)  # type: ignore[arg-type]
    assert budget.step_rows == 0
    assert budget.rows(CALIBRATION_STEPS) >= CALIBRATION_ROWS  # as fast as measured: all fit


async def test_passes_too_long_for_the_loop_run_on_the_long_lanes_thread(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    short, long = "a fine film", "a fine film, and a fine cast too"
    expected = runtime.predictor.predict([short]) + runtime.predictor.predict([long])
    seen = _recording_threads(monkeypatch, "_probabilities")  # what predict_ids runs
    # As if the model were slow: a full batch of texts over 4 tokens would hold the loop.
    runtime.batcher.budget = PassBudget(64 * 4)
    assert await runtime.predict([short], field="text") == expected[:1]
    assert await runtime.predict([long], field="text") == expected[1:]
    assert [name.split("_")[0] for name in seen] == ["MainThread", "long-pass"]
