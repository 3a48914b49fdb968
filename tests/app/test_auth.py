"""API keys: compared in constant time, never logged; the optional per-client rate limit."""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

import pytest

import app.http.security
from app.http.ratelimit import RateLimiter

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


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi"])
async def test_every_key_is_compared_as_a_fixed_length_digest(
    serve: Any, monkeypatch: pytest.MonkeyPatch, fast_path: bool
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare_digest = hmac.compare_digest

    def spy(offered: bytes, expected: bytes) -> bool:
        calls.append((offered, expected))
        return compare_digest(offered, expected)

    monkeypatch.setattr(app.http.security.hmac, "compare_digest", spy)
    async with serve(api_keys=f"{KEY},{OTHER_KEY}", fast_path=fast_path) as client:
        response = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Bearer {KEY}"}
        )
    assert response.status_code == 200
    digest = hashlib.sha256
    # Keys of different lengths, compared as digests of one length: the time tells no length.
    assert calls == [
        (digest(KEY.encode()).digest(), digest(KEY.encode()).digest()),
        (digest(KEY.encode()).digest(), digest(OTHER_KEY.encode()).digest()),
    ]


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi"])
async def test_every_spelling_of_a_key_is_one_key_and_one_bucket(
    serve: Any, fast_path: bool
) -> None:
    spellings = [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER   {KEY}", f"Bearer\t{KEY} "]
    async with serve(api_keys=KEY, rate_limit_per_minute=4, fast_path=fast_path) as client:
        statuses = [
            (
                await client.post(
                    "/predict", json={"text": "fine"}, headers={"Authorization": spelling}
                )
            ).status_code
            for spelling in [*spellings, f"bearer {KEY}"]
        ]
        wrong = await client.post(
            "/predict", json={"text": "fine"}, headers={"Authorization": f"Basic {KEY}"}
        )
    assert statuses == [200, 200, 200, 200, 429]
    assert wrong.status_code == 401


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
    assert len(limiter) == 1


def test_a_flood_of_new_clients_keeps_the_table_bounded_and_the_busiest_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(2, max_clients=100, clock=lambda: now[0])
    assert [limiter.acquire("steady") for _ in range(3)][-1] > 0  # its bucket is empty
    for client in range(10_000):
        now[0] += 0.0001  # all within the refill time: no bucket has refilled
        limiter.acquire(f"flood-{client}")
        if client % 50 == 0:
            limiter.acquire("steady")  # recently used: not the one evicted
        assert len(limiter) <= 100
    assert limiter.acquire("steady") > 0  # still limited: the flood did not reset it
