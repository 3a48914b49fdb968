"""The micro-batcher and the serial runner, with plain functions standing in for the model."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.inference.batching import (
    DeadlineExceededError,
    MicroBatcher,
    OverloadedError,
    PassBudget,
)
from app.inference.runner import SerialRunner

pytestmark = pytest.mark.anyio


class Recorder:
    """A `run_batch` that doubles its inputs and records every batch it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        return [item * 2 for item in items]


def make_batcher(
    run: Recorder, executor: ThreadPoolExecutor | None = None, **limits: float
) -> MicroBatcher[int, int]:
    options: dict[str, float] = {"max_batch_size": 8, "queue_size": 64, "timeout_s": 5.0}
    options.update(limits)
    return MicroBatcher(
        run,
        max_batch_size=int(options["max_batch_size"]),
        queue_size=int(options["queue_size"]),
        timeout_s=options["timeout_s"],
        max_wait_s=options.get("max_wait_s", 0.0),
        executor=executor,
    )


async def test_results_come_back_in_order() -> None:
    run = Recorder()
    batcher = make_batcher(run)
    batcher.start()
    try:
        assert await batcher.submit([1, 2, 3]) == [2, 4, 6]
    finally:
        await batcher.stop()


async def test_concurrent_requests_share_forward_passes() -> None:
    run = Recorder(delay_s=0.01)
    with ThreadPoolExecutor(1) as executor:
        batcher = make_batcher(run, executor, max_batch_size=16)
        batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit([i]) for i in range(40)))
        finally:
            await batcher.stop()
    assert results == [[i * 2] for i in range(40)]
    assert sorted(item for batch in run.batches for item in batch) == list(range(40))
    assert max(len(batch) for batch in run.batches) == 16  # never more than max_batch_size
    assert len(run.batches) <= 5  # 40 requests, far fewer passes


async def test_a_lone_request_does_not_wait_for_a_window() -> None:
    run = Recorder()
    batcher = make_batcher(run)
    batcher.start()
    try:
        await batcher.submit([0])  # first call pays the task start-up
        started = time.perf_counter()
        await batcher.submit([1])
        elapsed = time.perf_counter() - started
    finally:
        await batcher.stop()
    assert run.batches[-1] == [1]
    assert elapsed < 0.05  # no fixed batching window (it would be the whole window at least)


async def test_max_wait_gathers_a_fuller_batch() -> None:
    run = Recorder()
    batcher = make_batcher(run, max_wait_s=0.05)
    batcher.start()
    try:

        async def later(item: int) -> list[int]:
            await asyncio.sleep(0.005)
            return await batcher.submit([item])

        await asyncio.gather(batcher.submit([1]), later(2), later(3))
    finally:
        await batcher.stop()
    assert run.batches == [[1, 2, 3]]


async def test_full_queue_refuses_at_once() -> None:
    gate = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        gate.wait(5)
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            blocked, max_batch_size=2, queue_size=3, timeout_s=5.0, executor=executor
        )
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([1, 2]))  # taken into the running batch
            await asyncio.sleep(0.02)
            queued = asyncio.ensure_future(batcher.submit([3, 4, 5]))  # fills the queue
            await asyncio.sleep(0.01)
            assert batcher.queue_depth == 3
            with pytest.raises(OverloadedError):
                await batcher.submit([6])
            gate.set()
            assert await first == [1, 2]
            assert await queued == [3, 4, 5]
        finally:
            gate.set()
            await batcher.stop()


async def test_items_past_their_deadline_are_dropped_not_computed() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def blocked(items: list[int]) -> list[int]:
        seen.append(items)
        gate.wait(5)
        return items

    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            blocked, max_batch_size=1, queue_size=10, timeout_s=0.05, executor=executor
        )
        batcher.start()
        try:
            asyncio.get_running_loop().call_later(0.1, gate.set)  # the first batch is slow
            with pytest.raises(DeadlineExceededError):
                await batcher.submit([1, 2, 3])
            assert await batcher.submit([4]) == [4]
        finally:
            gate.set()
            await batcher.stop()
    assert seen == [[1], [4]]  # 2 and 3 waited past their deadline: never computed


async def test_stopping_fails_the_running_batch_and_the_queue() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[int, int] = MicroBatcher(
            lambda items: [gate.wait(5) and item for item in items],
            max_batch_size=1,
            queue_size=10,
            timeout_s=5.0,
            executor=executor,
        )
        batcher.start()
        running = asyncio.ensure_future(batcher.submit([1]))
        queued = asyncio.ensure_future(batcher.submit([2]))
        await asyncio.sleep(0.02)
        await batcher.stop()
        gate.set()
        for request in (running, queued):
            with pytest.raises(OverloadedError, match="shutting down"):
                await request


async def test_errors_reach_every_request_in_the_batch() -> None:
    def broken(items: list[int]) -> list[int]:
        raise RuntimeError("boom")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        broken, max_batch_size=4, queue_size=10, timeout_s=1.0
    )
    batcher.start()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit([1, 2])
    finally:
        await batcher.stop()


async def test_a_stopped_batcher_refuses() -> None:
    batcher = make_batcher(Recorder())
    with pytest.raises(OverloadedError):
        await batcher.submit([1])


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="positive"):
        MicroBatcher(Recorder(), max_batch_size=0, queue_size=1, timeout_s=1.0)


async def test_serial_runner_bounds_its_waiting_room() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        runner = SerialRunner(max_waiting=1, timeout_s=5.0, executor=executor)
        running = asyncio.ensure_future(runner.run(lambda: gate.wait(5)))
        await asyncio.sleep(0.02)
        waiting = asyncio.ensure_future(runner.run(lambda: "second"))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await runner.run(lambda: "third")
        gate.set()
        assert await running is True
        assert await waiting == "second"
        assert await runner.run(lambda: "again") == "again"


async def test_serial_runner_deadline() -> None:
    gate = threading.Event()
    with ThreadPoolExecutor(1) as executor:
        runner = SerialRunner(max_waiting=2, timeout_s=0.05, executor=executor)
        with pytest.raises(DeadlineExceededError):
            await runner.run(lambda: gate.wait(5))
        gate.set()
        assert await runner.run(lambda: 1) == 1


async def test_serial_runner_on_the_loop_does_not_start_a_call_past_its_deadline() -> None:
    runner = SerialRunner(max_waiting=2, timeout_s=1e-9)
    calls: list[int] = []
    with pytest.raises(DeadlineExceededError):
        await runner.run(lambda: calls.append(1))
    assert calls == []


class Lengths:
    """A `run_batch` over token lists: returns each list's sum, records the lengths per pass."""

    def __init__(self) -> None:
        self.passes: list[list[int]] = []

    def __call__(self, items: list[list[int]]) -> list[int]:
        self.passes.append([len(item) for item in items])
        return [sum(item) for item in items]


async def submit_all(batcher: MicroBatcher[list[int], int], requests: list[list[list[int]]]) -> Any:
    batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(items) for items in requests))
    finally:
        await batcher.stop()


@pytest.mark.parametrize("on_loop", [True, False], ids=["on-loop", "thread"])
async def test_length_groups_keep_order_and_results(on_loop: bool) -> None:
    run = Lengths()
    long_text = list(range(300))
    requests = [
        [[1, 2, 3], long_text, [4]],  # a batch request: answered in its own order
        [[5] * 10],
        [[6] * 2, [7] * 40],
        [[8] * 120],
        [[9]],
    ]
    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            run,
            max_batch_size=64,
            queue_size=64,
            timeout_s=5.0,
            executor=None if on_loop else executor,
            size_of=len,
        )
        results = await submit_all(batcher, requests)
    assert results == [[sum(item) for item in items] for items in requests]
    # One pass would run 300 steps for all: the short texts go first, and a text more than
    # twice its group's shortest plus the slack starts a later pass.
    assert run.passes == [[1, 1, 2, 3, 10], [40], [120], [300]]


async def test_lengths_within_the_slack_share_one_pass() -> None:
    run = Lengths()
    lengths = (3, 9, 14, 33, 42, 7, 12, 74)  # review sentences of the bench
    batcher: MicroBatcher[list[int], int] = MicroBatcher(
        run, max_batch_size=64, queue_size=64, timeout_s=5.0, size_of=len
    )
    results = await submit_all(batcher, [[[1] * n] for n in lengths])
    assert results == [[n] for n in lengths]
    # Up to 2 * 3 + 8 = 14 with the 3; from 33 up to 2 * 33 + 8 = 74.
    assert run.passes == [[3, 7, 9, 12, 14], [33, 42, 74]]


async def test_without_size_of_a_batch_is_one_pass_in_arrival_order() -> None:
    run = Lengths()
    batcher: MicroBatcher[list[int], int] = MicroBatcher(
        run, max_batch_size=64, queue_size=64, timeout_s=5.0
    )
    await submit_all(batcher, [[[1] * 300], [[1]], [[1] * 5]])
    assert run.passes == [[300, 1, 5]]


async def test_stopping_refuses_every_group_still_waiting() -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocked(items: list[list[int]]) -> list[int]:
        started.set()
        gate.wait(5)
        return [len(item) for item in items]

    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            blocked, max_batch_size=8, queue_size=8, timeout_s=5.0, executor=executor, size_of=len
        )
        batcher.start()
        short = asyncio.ensure_future(batcher.submit([[1]]))
        long = asyncio.ensure_future(batcher.submit([[1] * 200]))
        while not started.is_set():
            await asyncio.sleep(0.005)
        await batcher.stop()
        gate.set()
    for future in (short, long):
        with pytest.raises(OverloadedError):
            await future


# -- pass budgets ------------------------------------------------------------------------------


def test_a_pass_budget_trades_rows_for_steps() -> None:
    budget = PassBudget(1000, step_rows=2)
    assert budget.rows(100) == 8  # 100 * (8 + 2) = 1000
    assert budget.rows(101) == 7
    assert budget.rows(5000) == 1  # never less than one item: its limits are checked upstream
    assert budget.longest_for(8) == 100
    assert budget.longest_for(64) == 15  # 15 * 66 = 990; 16 * 66 = 1056
    for cells, step_rows in ((0, 0), (-1, 0), (10, -1)):
        with pytest.raises(ValueError, match="cells"):
            PassBudget(cells, step_rows=step_rows)


def test_a_pass_budget_needs_sizes() -> None:
    with pytest.raises(ValueError, match="size_of"):
        MicroBatcher(
            Recorder(), max_batch_size=4, queue_size=4, timeout_s=1.0, budget=PassBudget(10)
        )


def budgeted(run: Lengths, cells: float, **options: Any) -> MicroBatcher[list[int], int]:
    limits: dict[str, Any] = {"max_batch_size": 64, "queue_size": 256, "timeout_s": 5.0}
    limits.update(options)
    return MicroBatcher(run, size_of=len, budget=PassBudget(cells), **limits)


async def test_a_budget_cuts_a_costly_batch_into_passes_that_fit() -> None:
    run = Lengths()
    texts = [[i] * 30 for i in range(10)]
    # 100 cells: three texts of 30 tokens a pass.
    results = await submit_all(budgeted(run, 100), [texts])
    assert results == [[30 * i for i in range(10)]]
    assert run.passes == [[30, 30, 30]] * 3 + [[30]]


async def test_a_batch_of_short_texts_is_still_one_pass_within_the_budget() -> None:
    run = Lengths()
    # 64 rows of up to 15 tokens fit 960 cells: the short lane, as without a budget (and the
    # lengths within the grouping's slack: 15 <= 2 * 8 + 8).
    lengths = [8 + i % 8 for i in range(64)]
    await submit_all(budgeted(run, 960), [[[1] * n for n in lengths]])
    assert [sorted(lengths)] == run.passes


async def test_the_budget_cuts_length_groups_too() -> None:
    run = Lengths()
    # Short lane up to 960 // 8 = 120 tokens a text; 8 texts of 100 tokens fit 800 cells, but
    # with a step cost of 2 rows only 960 // 100 - 2 = 7 of them fit one pass.
    batcher: MicroBatcher[list[int], int] = MicroBatcher(
        run,
        max_batch_size=8,
        queue_size=64,
        timeout_s=5.0,
        size_of=len,
        budget=PassBudget(960, step_rows=2),
    )
    await submit_all(batcher, [[[1] * 100] * 8])
    assert run.passes == [[100] * 7, [100]]


async def test_a_short_text_goes_ahead_of_long_ones_already_queued() -> None:
    run = Lengths()
    batcher = budgeted(run, 100)  # short: up to 1 token; a long pass: two of 50 tokens
    batcher.start()
    try:
        long = asyncio.ensure_future(batcher.submit([[2] * 50] * 8))
        while not run.passes:  # the first slice has run; three more are queued
            await asyncio.sleep(0)
        short = await batcher.submit([[7]])
        assert run.passes == [[50, 50], [1]]  # in before the next slice
        assert short == [7]
        assert await long == [100] * 8
    finally:
        await batcher.stop()
    assert run.passes == [[50, 50], [1]] + [[50, 50]] * 3


async def test_long_texts_progress_while_short_ones_keep_coming() -> None:
    run = Lengths()
    batcher = budgeted(run, 100)
    batcher.start()
    try:
        long = asyncio.ensure_future(batcher.submit([[1] * 50] * 4))
        while not long.done():  # a new short text as soon as the last one is answered
            await batcher.submit([[1]])
        assert await long == [50] * 4
    finally:
        await batcher.stop()
    # Each round runs one slice of the long lane after the short text: two slices, two rounds.
    assert run.passes[:4] == [[1], [50, 50]] * 2
    assert run.passes.count([50, 50]) == 2


async def test_long_texts_past_their_deadline_are_dropped_not_computed() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def blocked(items: list[list[int]]) -> list[int]:
        seen.append([len(item) for item in items])
        gate.wait(5)
        return [len(item) for item in items]

    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            blocked,
            max_batch_size=8,
            queue_size=64,
            timeout_s=0.25,
            executor=executor,
            size_of=len,
            budget=PassBudget(100),
        )
        batcher.start()
        try:
            asyncio.get_running_loop().call_later(0.5, gate.set)  # the first slice is slow
            with pytest.raises(DeadlineExceededError):
                await batcher.submit([[1] * 50] * 6)
            assert await batcher.submit([[1] * 40]) == [40]
        finally:
            gate.set()
            await batcher.stop()
    assert seen == [[50, 50], [40]]  # the other four waited past their deadline


async def test_stopping_refuses_the_long_lane_too() -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocked(items: list[list[int]]) -> list[int]:
        started.set()
        gate.wait(5)
        return [len(item) for item in items]

    with ThreadPoolExecutor(1) as executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            blocked,
            max_batch_size=8,
            queue_size=64,
            timeout_s=5.0,
            executor=executor,
            size_of=len,
            budget=PassBudget(100),
        )
        batcher.start()
        long = asyncio.ensure_future(batcher.submit([[1] * 50] * 6))
        while not started.is_set():
            await asyncio.sleep(0.005)
        assert batcher.queue_depth == 4  # two slices still queued in the long lane
        with pytest.raises(OverloadedError):  # the queue limit counts both lanes
            await MicroBatcher.submit(batcher, [[1]] * 61)
        await batcher.stop()
        gate.set()
    with pytest.raises(OverloadedError, match="shutting down"):
        await long


async def test_with_a_long_executor_short_texts_never_wait_for_a_long_pass() -> None:
    gate = threading.Event()
    threads: dict[int, str] = {}

    def run(items: list[list[int]]) -> list[int]:
        threads[len(items[0])] = threading.current_thread().name
        if len(items[0]) == 50:
            gate.wait(5)
        return [len(item) for item in items]

    with ThreadPoolExecutor(1, thread_name_prefix="long") as long_executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            run,
            max_batch_size=64,
            queue_size=256,
            timeout_s=5.0,
            size_of=len,
            budget=PassBudget(100),  # short: up to 1 token
            long_executor=long_executor,
        )
        batcher.start()
        try:
            long = asyncio.ensure_future(batcher.submit([[1] * 50] * 8))
            while 50 not in threads:  # the long pass has started, and is held
                await asyncio.sleep(0.001)
            assert await batcher.submit([[1]]) == [1]  # answered while it is held
            assert not long.done()
            gate.set()
            assert await long == [50] * 8
        finally:
            gate.set()
            await batcher.stop()
    assert threads[1] == "MainThread"
    assert threads[50].startswith("long")


async def test_with_a_long_executor_long_texts_run_in_full_length_groups() -> None:
    run = Lengths()
    with ThreadPoolExecutor(1) as long_executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            run,
            max_batch_size=16,
            queue_size=256,
            timeout_s=5.0,
            size_of=len,
            budget=PassBudget(100),
            long_executor=long_executor,
        )
        texts = [[1] * 50] * 20 + [[1] * 200] * 2 + [[1]] * 3
        results = await submit_all(batcher, [texts])
    assert results == [[len(text) for text in texts]]
    # Not cut to the budget: the thread does not hold the loop. Grouped by length, up to a
    # full batch at a time, and the short texts on their own.
    assert sorted(run.passes) == [[1, 1, 1], [50] * 4, [50] * 16, [200, 200]]


async def test_with_a_long_executor_stopping_refuses_the_long_lane() -> None:
    gate = threading.Event()
    started = threading.Event()

    def blocked(items: list[list[int]]) -> list[int]:
        started.set()
        gate.wait(5)
        return [len(item) for item in items]

    with ThreadPoolExecutor(1) as long_executor:
        batcher: MicroBatcher[list[int], int] = MicroBatcher(
            blocked,
            max_batch_size=2,
            queue_size=64,
            timeout_s=5.0,
            size_of=len,
            budget=PassBudget(100),  # short: up to 50 tokens
            long_executor=long_executor,
        )
        batcher.start()
        running = asyncio.ensure_future(batcher.submit([[1] * 60] * 2))
        while not started.is_set():
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(batcher.submit([[1] * 60] * 3))
        await asyncio.sleep(0.01)
        assert batcher.queue_depth == 3
        await batcher.stop()
        gate.set()
    for request in (running, queued):
        with pytest.raises(OverloadedError, match="shutting down"):
            await request
