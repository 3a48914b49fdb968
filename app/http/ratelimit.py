"""Per-client token buckets behind `APP_RATE_LIMIT_PER_MINUTE`.

A client is its matched API key when the service has keys, else its address (`app.http.security`
decides which). Each bucket holds a minute's worth of requests and refills continuously, so a
client may burst up to the limit and then sustain it. The buckets live in the worker process:
with `WORKERS` > 1 or several replicas each process counts on its own, so the service-wide
limit is the per-process limit times the number of processes (a shared limit belongs in the
proxy or gateway in front).

Memory is bounded under a flood of new clients, at constant cost per request: buckets are
kept in order of last use, a bucket that has refilled (the same as no bucket) is dropped from
the old end as new ones arrive, and when the table is full of live buckets the least recently
used one is dropped.

`TokenBucket` is one such bucket on its own, for a limit held by a single object (the
message rate of one /stream/ws connection) instead of a table of clients.
"""

from __future__ import annotations

import time
from collections import OrderedDict
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
        # client -> (tokens, as of), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._refill_s = self.capacity / self.per_second

    def __len__(self) -> int:
        return len(self._buckets)

    def acquire(self, client: str) -> float:
        """Take one request from `client`'s bucket: 0.0, or the seconds until one is free."""
        now = self.clock()
        buckets = self._buckets
        state = buckets.get(client)
        if state is None:
            self._make_room(now)
            tokens = self.capacity
        else:
            tokens = min(self.capacity, state[0] + (now - state[1]) * self.per_second)
            buckets.move_to_end(client)
        if tokens < 1.0:
            buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        buckets[client] = (tokens - 1.0, now)
        return 0.0

    def _make_room(self, now: float) -> None:
        buckets = self._buckets
        # Refilled buckets at the old end cost nothing to forget; stop at the first live one.
        while buckets:
            oldest, (_, since) = next(iter(buckets.items()))
            if now - since < self._refill_s:
                break
            del buckets[oldest]
        if len(buckets) >= self.max_clients:
            buckets.popitem(last=False)


class TokenBucket:
    """One bucket of the same kind: `rate` requests per second on average, bursts of up to
    `burst`, refilled continuously. For a limit that belongs to one object (a connection)
    rather than to a table of clients."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate")

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def acquire(self) -> float:
        """Take one request: 0.0, or the seconds until one is free (nothing is taken then)."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens < 1.0:
            self._tokens = tokens
            return (1.0 - tokens) / self.rate
        self._tokens = tokens - 1.0
        return 0.0
