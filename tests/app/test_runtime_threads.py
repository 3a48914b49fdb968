"""Where the model runs: batches on the event loop (default), traces always on a thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from app.metrics import Metrics
from app.predictor import Predictor
from app.runtime import Runtime

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
