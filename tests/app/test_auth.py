"""API keys: compared in constant time, never logged; the optional per-client rate limit."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import pytest

import app.api.deps
from app.ratelimit import RateLimiter

KEY = "s3cret-key-for-the-tests"
OTHER_KEY = "another-key-0123456789"
pytestmark = pytest.mark.anyio


async def test_key_never_reaches_the_logs(
    serve: Any, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve(api_keys=f"{KEY},{OTHER_KEY}", log_level="DEBUG", log_format="json") as client:
        ok = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}"}
        )
        wrong = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}x"}
        )
        slow_path = await client.post(
            "/tokenize", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert (ok.status_code, wrong.status_code, slow_path.status_code) == (200, 401, 200)
    assert wrong.json()["error"]["code"] == "unauthorized"
    out, err = capfd.readouterr()
    logged = out + err + caplog.text + repr([record.__dict__ for record in caplog.records])
    assert '"path":"/predict"' in logged  # the access log was captured...
    assert "s3cret" not in logged  # ...and holds no key
    assert "another-key" not in logged


async def test_every_key_is_compared_with_compare_digest(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(offered: bytes, expected: bytes) -> bool:
        calls.append((offered, expected))
        return compare_digest(offered, expected)

    monkeypatch.setattr(app.api.deps.hmac, "compare_digest", spy)
    async with serve(api_keys=f"{KEY},{OTHER_KEY}", fast_path=False) as client:
        response = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 200
    assert calls == [(KEY.encode(), KEY.encode()), (KEY.encode(), OTHER_KEY.encode())]


async def test_rate_limit_per_key(serve: Any) -> None:
    async with serve(api_keys=f"{KEY},{OTHER_KEY}", rate_limit_per_minute=3) as client:
        first = [
            await client.post(
                "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}"}
            )
            for _ in range(4)
        ]
        other = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {OTHER_KEY}"}
        )
    assert [r.status_code for r in first] == [200, 200, 200, 429]
    limited = first[-1]
    assert limited.headers["retry-after"] == "20"  # 3 a minute: one every 20 s
    assert limited.json() == {
        "error": {
            "code": "rate_limited",
            "message": "Too many requests; retry after 20 seconds.",
            "details": [],
        },
        "request_id": limited.headers["x-request-id"],
    }
    assert other.status_code == 200


async def test_rate_limit_per_client_without_keys(serve: Any) -> None:
    async with serve(rate_limit_per_minute=2) as client:
        statuses = [
            (await client.post("/tokenize", json={"text": "fine"})).status_code for _ in range(3)
        ]
        health = await client.get("/readyz")
    assert statuses == [200, 200, 429]
    assert health.status_code == 200  # probes are never limited


def test_bucket_refills_continuously() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one a second, bursts of 60
    assert [limiter.acquire("a") for _ in range(60)] == [0.0] * 60
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0


def test_buckets_stay_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(60, max_clients=10, clock=lambda: now[0])
    for client in range(10):
        limiter.acquire(str(client))
    now[0] = 120.0  # every bucket has refilled
    limiter.acquire("new")
    assert len(limiter._buckets) == 1
