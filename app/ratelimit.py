"""Per-client token buckets behind `APP_RATE_LIMIT_PER_MINUTE`.

A client is its API key when the service has keys, else its address. Each bucket holds a
minute's worth of requests and refills continuously, so a client may burst up to the limit and
then sustain it. The buckets live in the worker process: with `WORKERS` > 1 or several
replicas each process counts on its own, so the service-wide limit is the per-process limit
times the number of processes (a shared limit belongs in the proxy or gateway in front).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets of `per_minute` requests, one per client, refilled continuously."""

    def __init__(
        self,
        per_minute: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, as of)

    def acquire(self, client: str) -> float:
        """Take one request from `client`'s bucket: 0.0, or the seconds until one is free."""
        now = self.clock()
        tokens, since = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - since) * self.per_second)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        if client not in self._buckets and len(self._buckets) >= self.max_clients:
            self._forget_full(now)
        self._buckets[client] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: memory stays bounded by the
        # clients seen within the last minute.
        refill = self.capacity / self.per_second
        self._buckets = {
            client: state for client, state in self._buckets.items() if now - state[1] < refill
        }
