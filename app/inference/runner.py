"""A one-at-a-time line for work that is not batched: traces, explanations, streams.

Such a call runs alone on the model's thread (or on the event loop when there is none), so a long
one never holds the loop, and the room to wait for it is bounded: a call that does not fit is
refused at once with `OverloadedError`, and one without a result by its deadline fails with
`DeadlineExceededError`, as the micro-batcher's requests do (`app.inference.batching`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TypeVar

from app.inference.batching import (
    BatchObserver,
    DeadlineExceededError,
    NullObserver,
    OverloadedError,
)

T = TypeVar("T")


class SerialRunner:
    """Runs one heavy call at a time on `executor`, with a bounded waiting room.

    For work that is not batched (a /hidden-states trace, an explanation): the runtime gives it
    the batcher's thread when there is one, else a thread of its own, so a long call never
    holds the event loop; at most one such call is in that thread's queue at any time.
    """

    def __init__(
        self,
        *,
        max_waiting: int,
        timeout_s: float,
        executor: Executor | None = None,
        observer: BatchObserver | None = None,
    ) -> None:
        self._max_waiting = max_waiting
        self._timeout_s = timeout_s
        self._executor = executor
        self._observer: BatchObserver = observer or NullObserver()
        self._lock = asyncio.Lock()
        self._waiting = 0

    async def run(self, call: Callable[[], T]) -> T:
        if self._waiting >= self._max_waiting:
            self._observer.count_rejection("overloaded")
            raise OverloadedError(f"{self._waiting} requests are already waiting")
        self._waiting += 1
        acquired = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
                acquired = True
                self._waiting -= 1
                if self._executor is None:
                    # On the loop nothing can interrupt the call: start it only in time.
                    if loop.time() >= deadline:
                        raise TimeoutError
                    return call()
                return await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            self._observer.count_rejection("deadline")
            raise DeadlineExceededError(f"no result within {self._timeout_s:g} s") from None
        finally:
            if acquired:
                self._lock.release()
            else:
                self._waiting -= 1
