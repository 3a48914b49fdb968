"""Micro-batching: concurrent requests share one forward pass; overload is refused, not queued.

An RNN's forward pass over 32 short texts costs a few times one text's, not 32 times, so
texts from concurrent requests are gathered into one batch. The batcher never waits on a timer
when the model is idle (a fixed window would cost a lone request its full length):
the worker takes whatever is queued the moment the model is free, and texts that arrive while
a batch runs form the next one. `max_wait_s > 0` adds an optional wait for a fuller batch.

Backpressure: the queue holds at most `queue_size` texts. A request that does not fit is
refused at once with `OverloadedError` (503 + Retry-After upstream) instead of joining an
unbounded line. Every request has a deadline: an item still queued when its deadline passes is
dropped, not computed, and its request fails with `DeadlineExceededError`. The deadline is
checked by the worker as it forms each batch (no timer per request: one costs several
microseconds on the hot path), so it is exact to within one batch's run time.

Grouping by length: the items taken for one pass are sorted by `size_of` (a text's token
count) and split into groups of similar length, each its own pass, shortest first (their
answers go out before the longer ones run). A pass runs as many steps as its longest text, and
an unpadded float32 pass computes every row for every step (`app.inference.predictor`), so one
250-token review would otherwise make 60 tweets pay 250 steps each. A split costs one more
pass (a fixed cost of roughly `SPLIT_SLACK` steps of a full batch), so a new group starts only
at an item longer than `2 * shortest_in_group + SPLIT_SLACK`: padding at most about doubles a
group's work. Results do not depend on grouping: each item's output is its own (see
`run_batch`).

Bounded passes (`budget`, a `PassBudget`): a pass on the event loop holds it for its whole
run, and one pass over a full batch of long texts runs for hundreds of milliseconds, while
every other request of the worker waits. With a budget (cells a pass may cost, which the
caller sizes from the model's measured speed), texts too long for a full batch of them to fit
one pass wait apart from the rest, in the long lane, and a group of short texts too costly
for one pass is cut into several. The long lane runs one of two ways:

- with `long_executor`, on that thread, in batches of up to `max_batch_size` (grouped by
  length as usual), while the worker goes on with short texts: their passes never wait for
  a long one, and long texts keep the efficiency of full batches (the pass releases the GIL
  while it computes);
- without, in slices within the budget on the worker itself: each round runs the short
  texts waiting (one full batch at most), then one slice of long ones, and the loop turns
  between passes; a short text waits for at most one slice however many long texts are
  queued, and long texts still progress every round.

FIFO order holds within each lane.

The model runs on `executor` (one dedicated thread), or on the event loop itself when
`executor` is None (measured faster with 2 worker processes: no thread hand-off, no GIL
contention); the long lane's passes, on `long_executor` when given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

logger = logging.getLogger("app.inference.batching")

In = TypeVar("In")
Out = TypeVar("Out")


# A pass has a fixed cost of about as many recurrence steps (see the module doc).
SPLIT_SLACK = 8


@dataclass(frozen=True, slots=True)
class PassBudget:
    """How much work one pass may hold, in cells: a pass of `rows` items whose largest
    `size_of` is `steps` costs `steps * (rows + step_rows)`, at most `cells`.

    A recurrent pass runs `steps` steps over its rows; `step_rows` is a step's fixed cost
    (kernel calls, per-step set-up) in rows' worth, which dominates a pass of few long rows.
    Whoever measures the model (`app.inference.runtime`) chooses both; the batcher only keeps passes
    within them.
    """

    cells: float
    step_rows: float = 0.0

    def __post_init__(self) -> None:
        if not self.cells > 0 or not self.step_rows >= 0:
            raise ValueError("a pass budget needs cells > 0 and step_rows >= 0")

    def rows(self, steps: int) -> int:
        """The most items of up to `steps` each that one pass may take (at least one: an
        item is never refused for its size here, its limits are checked upstream)."""
        return max(1, int(self.cells / max(1, steps) - self.step_rows))

    def longest_for(self, rows: int) -> int:
        """The largest size of which `rows` items still fit one pass."""
        return int(self.cells / (rows + self.step_rows))


class OverloadedError(Exception):
    """The queue is full (or the batcher is stopping): refuse now, the client retries later."""


class DeadlineExceededError(Exception):
    """The request's deadline passed before its results were ready."""


class BatchObserver(Protocol):
    """Receives measurements (`app.core.metrics.ModelMetrics` implements it, for one model)."""

    def observe_batch(self, size: int, seconds: float) -> None: ...

    def set_queue_depth(self, depth: int) -> None: ...

    def count_rejection(self, reason: str) -> None: ...


class NullObserver:
    """A `BatchObserver` that drops every measurement."""

    def observe_batch(self, size: int, seconds: float) -> None:
        pass

    def set_queue_depth(self, depth: int) -> None:
        pass

    def count_rejection(self, reason: str) -> None:
        pass


@dataclass(slots=True)
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    deadline: float  # loop time


class MicroBatcher(Generic[In, Out]):
    """Gathers items submitted concurrently into calls of `run_batch(items) -> outputs`.

    `run_batch` must return one output per item, in order, and be a pure function of each item
    (the result of an item must not depend on its batch-mates). `budget` (with `size_of`)
    bounds each pass (module doc); it may be set later, once the model has been measured.
    """

    def __init__(
        self,
        run_batch: Callable[[list[In]], list[Out]],
        *,
        max_batch_size: int,
        queue_size: int,
        timeout_s: float,
        max_wait_s: float = 0.0,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
        size_of: Callable[[In], int] | None = None,
        budget: PassBudget | None = None,
        long_executor: Executor | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1 or timeout_s <= 0 or max_wait_s < 0:
            raise ValueError("batcher limits must be positive")
        self._run_batch = run_batch
        self._size_of = size_of
        self._max_batch_size = max_batch_size
        self._queue_size = queue_size
        self._timeout_s = timeout_s
        self._max_wait_s = max_wait_s
        self._executor = executor
        self._observer: BatchObserver = observer or NullObserver()
        self._queue: deque[_Pending[In, Out]] = deque()
        # Items too long for a full batch of them to fit one pass (module doc).
        self._long: deque[_Pending[In, Out]] = deque()
        self._budget: PassBudget | None = None
        self._short_size: int | None = None  # above it an item goes to `_long`; None: no lanes
        self._long_executor = long_executor
        self._wakeup = asyncio.Event()
        self._long_wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._long_worker: asyncio.Task[None] | None = None
        self.budget = budget

    @property
    def budget(self) -> PassBudget | None:
        return self._budget

    @budget.setter
    def budget(self, budget: PassBudget | None) -> None:
        """Items already queued keep their lane; every pass from now on keeps to `budget`."""
        if budget is not None and self._size_of is None:
            raise ValueError("a pass budget needs size_of")
        self._budget = budget
        self._short_size = None if budget is None else budget.longest_for(self._max_batch_size)

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + len(self._long)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name="batcher")
        if self._long_executor is not None and self._long_worker is None:
            self._long_worker = loop.create_task(self._work_long(), name="batcher-long")

    async def stop(self) -> None:
        """Stop the workers; whatever is still queued is refused with `OverloadedError`."""
        workers = [self._worker, self._long_worker]
        self._worker = self._long_worker = None
        for worker in workers:
            if worker is not None:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        for queue in (self._queue, self._long):
            while queue:
                pending = queue.popleft()
                if not pending.future.done():
                    pending.future.set_exception(OverloadedError("the service is shutting down"))

    async def submit(self, items: Sequence[In]) -> list[Out]:
        """Results for `items`, in order, computed in whatever batches the load allows."""
        if not self.running:
            raise OverloadedError("the batcher is not running")
        waiting = len(self._queue) + len(self._long)
        if waiting + len(items) > self._queue_size:
            self._observer.count_rejection("overloaded")
            raise OverloadedError(f"{waiting} texts are already waiting for the model")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        futures: list[asyncio.Future[Out]] = [loop.create_future() for _ in items]
        short_size = self._short_size
        if short_size is None:
            self._queue.extend(
                _Pending(item, future, deadline)
                for item, future in zip(items, futures, strict=True)
            )
        else:
            size_of = self._size_of
            assert size_of is not None  # a budget needs it (setter)
            for item, future in zip(items, futures, strict=True):
                lane = self._queue if size_of(item) <= short_size else self._long
                lane.append(_Pending(item, future, deadline))
            if self._long:
                self._long_wakeup.set()
        self._wakeup.set()
        try:
            if len(futures) == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        finally:
            # A failed batch-mate or a client gone away: whatever is still queued is skipped.
            for future in futures:
                future.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        sliced = self._long_executor is None  # else the long lane has a worker of its own
        while True:
            while not self._queue and not (sliced and self._long):
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._max_wait_s > 0 and self._queue:
                await self._fill(loop.time() + self._max_wait_s)
            else:
                # Not a timer: one turn of the loop lets handlers that are ready now queue too
                # (and, between slices of long items, lets short ones in ahead of the next).
                await asyncio.sleep(0)
            now = loop.time()
            batch = self._take(self._queue, now)
            if sliced and self._long:
                self._take_long(now, batch)
            self._observer.set_queue_depth(self.queue_depth)
            await self._run_groups(self._group(batch, self._budget), loop, self._executor)

    async def _work_long(self) -> None:
        """The long lane's worker, with `long_executor` (module doc)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._long:
                self._long_wakeup.clear()
                await self._long_wakeup.wait()
            await asyncio.sleep(0)  # as `_work`: requests ready now join this batch
            batch = self._take(self._long, loop.time())
            self._observer.set_queue_depth(self.queue_depth)
            await self._run_groups(self._group(batch, None), loop, self._long_executor)

    async def _run_groups(
        self,
        groups: list[list[_Pending[In, Out]]],
        loop: asyncio.AbstractEventLoop,
        executor: Executor | None,
    ) -> None:
        for index, group in enumerate(groups):
            try:
                if index:
                    await asyncio.sleep(0)  # the shorter group's answers go out first
                await self._run(group, loop, executor)
            except asyncio.CancelledError:
                for waiting in groups[index:]:  # stopping: nobody may wait forever
                    _refuse(waiting, "the service is shutting down")
                raise

    def _group(
        self, batch: list[_Pending[In, Out]], budget: PassBudget | None
    ) -> list[list[_Pending[In, Out]]]:
        """`batch` sorted by size, split before any item much longer than its group's first,
        and before any item that would take its pass over `budget`."""
        size_of = self._size_of
        if size_of is None or len(batch) < 2:
            return [batch] if batch else []
        ordered = sorted(batch, key=lambda pending: size_of(pending.item))
        groups = [[ordered[0]]]
        limit = 2 * size_of(ordered[0].item) + SPLIT_SLACK
        for pending in ordered[1:]:
            size = size_of(pending.item)
            # Sorted: `size` is the longest of its group so far, which sets the pass's steps.
            if size > limit or (budget is not None and len(groups[-1]) >= budget.rows(size)):
                groups.append([])
                limit = 2 * size + SPLIT_SLACK
            groups[-1].append(pending)
        return groups

    async def _fill(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        while len(self._queue) < self._max_batch_size:
            remaining = until - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take(self, queue: deque[_Pending[In, Out]], now: float) -> list[_Pending[In, Out]]:
        batch: list[_Pending[In, Out]] = []
        while queue and len(batch) < self._max_batch_size:
            pending = queue.popleft()
            if self._live(pending, now):
                batch.append(pending)
        return batch

    def _take_long(self, now: float, batch: list[_Pending[In, Out]]) -> None:
        """Add one slice of the long lane to `batch`, in arrival order: as many items as fit
        one pass within the budget."""
        budget, size_of = self._budget, self._size_of
        queue = self._long
        rows = steps = 0
        while queue and rows < self._max_batch_size:
            pending = queue[0]
            if not self._live(pending, now):
                queue.popleft()
                continue
            if budget is not None and size_of is not None:
                widest = max(steps, size_of(pending.item))
                if rows >= budget.rows(widest):  # never true for the first: rows() >= 1
                    return
                steps = widest
            batch.append(queue.popleft())
            rows += 1

    def _live(self, pending: _Pending[In, Out], now: float) -> bool:
        """Whether a queued item is still wanted; one past its deadline is failed here."""
        if pending.future.done():  # cancelled: its request has given up
            return False
        if pending.deadline < now:
            self._observer.count_rejection("deadline")
            pending.future.set_exception(
                DeadlineExceededError(f"no result within {self._timeout_s:g} s")
            )
            return False
        return True

    async def _run(
        self,
        batch: list[_Pending[In, Out]],
        loop: asyncio.AbstractEventLoop,
        executor: Executor | None,
    ) -> None:
        items = [pending.item for pending in batch]
        started = time.perf_counter()
        try:
            if executor is None:
                outputs = self._run_batch(items)
            else:
                outputs = await loop.run_in_executor(executor, self._run_batch, items)
            if len(outputs) != len(items):
                raise RuntimeError(f"run_batch returned {len(outputs)} outputs for {len(items)}")
        except asyncio.CancelledError:
            _refuse(batch, "the service is shutting down")  # stopping while this batch ran
            raise
        except Exception as error:
            logger.exception("batch of %d failed", len(items))
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        self._observer.observe_batch(len(items), time.perf_counter() - started)
        for pending, output in zip(batch, outputs, strict=True):
            if not pending.future.done():
                pending.future.set_result(output)


def _refuse(batch: list[_Pending[In, Out]], reason: str) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(OverloadedError(reason))
