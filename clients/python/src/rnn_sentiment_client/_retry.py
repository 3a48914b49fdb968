"""When a failed request is sent again, and how long to wait first.

Every route of this API is a pure function of its request (streams included: their state
travels with the request), so a request can safely be sent again. Connection failures,
timeouts, 429 and 503 are retried up to `retries` times, waiting `backoff_s` and then twice as
long each time (with jitter, up to `max_backoff_s`). A 429 or 503 with `Retry-After` waits
exactly that long, unless it is longer than `max_backoff_s`: then the error is raised at once
(with its `retry_after`) for the caller to decide, rather than blocking for minutes.
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried (see the module doc)."""

    retries: int = 3  # attempts after the first
    backoff_s: float = 0.25  # the first wait; doubled for each further retry
    max_backoff_s: float = 10.0  # no wait is longer, and a longer Retry-After is not waited
    statuses: frozenset[int] = frozenset({429, 503})

    def wait(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based), or None to give up."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_backoff_s else None
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return ceiling * (0.5 + random.random() / 2)  # jitter: clients do not retry in step

    def outcome(self, result: httpx.Response | httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before trying again after `result`, or None when it is final."""
        if isinstance(result, httpx.Response):
            if result.status_code not in self.statuses:
                return None
            return self.wait(attempt, retry_after(result))
        return self.wait(attempt, None)


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
