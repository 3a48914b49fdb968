"""POST /predict's fast path answers exactly what FastAPI's route answers, and only when sure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.http.fast_path import PredictFastPath

pytestmark = pytest.mark.anyio

KEY = "first-key-1234567890"
JSON = {"content-type": "application/json"}


@pytest.fixture
def fast_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Records, for every request offered to the fast path, whether it answered it."""
    calls: list[bool] = []
    original = PredictFastPath.__call__

    async def spy(self: PredictFastPath, scope: Any, receive: Any, send: Any) -> Any:
        handed_back = await original(self, scope, receive, send)
        calls.append(handed_back is None)
        return handed_back

    monkeypatch.setattr(PredictFastPath, "__call__", spy)
    return calls


@asynccontextmanager
async def both(
    serve: Callable[..., Any], **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two apps on the same checkpoint: with the fast path, and FastAPI only."""
    async with (
        serve("lstm", fast_path=True, **overrides) as fast,
        serve("lstm", fast_path=False, **overrides) as standard,
    ):
        yield fast, standard


def comparable(response: httpx.Response) -> tuple[int, str, Any, str | None]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)  # differs per request by design
    return (
        response.status_code,
        response.headers["content-type"],
        body,
        response.headers.get("retry-after"),
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"text": "I love this film"}, id="one"),
        pytest.param({"texts": ["great", "awful service :(", "It arrived."]}, id="batch"),
        pytest.param({"text": "Great product 👍🏽🔥 \u202eevil\u202c"}, id="unicode"),
        pytest.param({"text": "fine", "texts": None}, id="explicit-null"),
    ],
)
async def test_answers_are_identical_to_fastapis(
    serve: Callable[..., Any], fast_path_calls: list[bool], body: dict[str, Any]
) -> None:
    async with both(serve) as (fast, standard):
        answered = await fast.post("/predict", json=body)
        expected = await standard.post("/predict", json=body)
    assert fast_path_calls == [True]
    assert answered.status_code == 200
    assert comparable(answered) == comparable(expected)
    assert answered.headers["x-request-id"]


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        pytest.param(b'{"text": "unterminated', JSON, id="malformed-json"),
        pytest.param(b'{"text": "hi"}', {"content-type": "text/plain"}, id="not-json"),
        pytest.param(b'{"text": "hi"}', {}, id="no-content-type"),
        pytest.param(b'{"text": "  "}', JSON, id="blank-text"),
        pytest.param(b'{"text": "hi", "extra": 1}', JSON, id="extra-field"),
        pytest.param(b'{"texts": []}', JSON, id="empty-batch"),
        pytest.param(b'{"text": "\\ud800 lone surrogate"}', JSON, id="lone-surrogate"),
        pytest.param(b'\xef\xbb\xbf{"text": "BOM first"}', JSON, id="utf8-bom"),
        pytest.param(b'{"text": 5}', JSON, id="not-a-string"),
    ],
)
async def test_anything_unusual_goes_through_fastapi(
    serve: Callable[..., Any],
    fast_path_calls: list[bool],
    content: bytes,
    headers: dict[str, str],
) -> None:
    async with both(serve) as (fast, standard):
        answered = await fast.post("/predict", content=content, headers=headers)
        expected = await standard.post("/predict", content=content, headers=headers)
    assert fast_path_calls == [False]  # handed back, body replayed to FastAPI
    assert comparable(answered) == comparable(expected)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"text": "word " * 300}, id="too-many-tokens"),
        pytest.param({"text": "x" * 2001}, id="too-long"),
        pytest.param({"texts": ["ok", "\u200b\u200b"]}, id="no-tokens-in-batch"),
        pytest.param({"texts": ["a"] * 65}, id="too-many-texts"),
    ],
)
async def test_limits_broken_while_predicting_give_the_same_errors(
    serve: Callable[..., Any], fast_path_calls: list[bool], body: dict[str, Any]
) -> None:
    async with both(serve) as (fast, standard):
        answered = await fast.post("/predict", json=body)
        expected = await standard.post("/predict", json=body)
    assert fast_path_calls == [True]
    assert answered.status_code == 422
    assert comparable(answered) == comparable(expected)


async def test_overload_is_503_with_retry_after_in_the_error_shape(
    serve: Callable[..., Any], fast_path_calls: list[bool]
) -> None:
    async with both(serve, queue_size=2, retry_after_s=3) as (fast, standard):
        answered = await fast.post("/predict", json={"texts": ["a", "b", "c"]})
        expected = await standard.post("/predict", json={"texts": ["a", "b", "c"]})
    assert fast_path_calls == [True]
    assert answered.status_code == 503
    assert answered.headers["retry-after"] == "3"
    assert answered.json()["error"]["code"] == "overloaded"
    assert answered.json()["request_id"] == answered.headers["x-request-id"]
    assert comparable(answered) == comparable(expected)


async def test_many_concurrent_requests_past_the_queue_are_shed_not_queued(
    serve: Callable[..., Any],
) -> None:
    async with serve("lstm", queue_size=4, max_batch_size=1) as client:
        responses = await asyncio.gather(
            *(client.post("/predict", json={"text": f"text number {i}"}) for i in range(40))
        )
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}  # the queue holds 4: the rest are refused at once
    for response in responses:
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "overloaded"
            assert response.headers["retry-after"] == "1"


class TestApiKeys:
    async def test_a_valid_key_is_answered_by_the_fast_path(
        self, serve: Callable[..., Any], fast_path_calls: list[bool]
    ) -> None:
        async with serve("lstm", api_keys=f"{KEY},second-key-4567890123") as client:
            response = await client.post(
                "/predict", json={"text": "hi"}, headers={"authorization": f"Bearer {KEY}"}
            )
        assert response.status_code == 200
        assert fast_path_calls == [True]

    @pytest.mark.parametrize(
        "authorization",
        [
            pytest.param(None, id="missing"),
            pytest.param("Bearer wrong-key-000", id="wrong"),
            pytest.param(f"Basic {KEY}", id="other-scheme"),
        ],
    )
    async def test_anything_else_is_fastapis_to_judge(
        self, serve: Callable[..., Any], fast_path_calls: list[bool], authorization: str | None
    ) -> None:
        headers = {"authorization": authorization} if authorization else {}
        async with serve("lstm", api_keys=KEY) as client:
            response = await client.post("/predict", json={"text": "hi"}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert fast_path_calls == [False]

    async def test_every_spelling_of_a_valid_key_is_answered_by_the_fast_path(
        self, serve: Callable[..., Any], fast_path_calls: list[bool]
    ) -> None:
        spellings = [f"bearer {KEY}", f"BEARER   {KEY}", f"Bearer\t{KEY}"]
        async with serve("lstm", api_keys=KEY) as client:
            responses = [
                await client.post(
                    "/predict", json={"text": "hi"}, headers={"authorization": spelling}
                )
                for spelling in spellings
            ]
        assert [response.status_code for response in responses] == [200, 200, 200]
        assert fast_path_calls == [True, True, True]


async def test_cors_requests_go_through_the_cors_middleware(
    serve: Callable[..., Any], fast_path_calls: list[bool]
) -> None:
    async with serve("lstm", cors_origins="https://app.example") as client:
        cors = await client.post(
            "/predict", json={"text": "hi"}, headers={"origin": "https://app.example"}
        )
        plain = await client.post("/predict", json={"text": "hi"})
    assert cors.headers["access-control-allow-origin"] == "https://app.example"
    assert cors.json() == plain.json()
    assert fast_path_calls == [False, True]


async def test_fast_answers_are_counted_under_the_route(
    serve: Callable[..., Any], fast_path_calls: list[bool]
) -> None:
    async with serve("lstm") as client:
        await client.post("/predict", json={"text": "hi"})
        await client.post("/predict", json={"text": "word " * 300})
        metrics = (await client.get("/metrics")).text
    assert fast_path_calls == [True, True]
    assert (
        'rnn_sentiment_http_requests_total{method="POST",route="/predict",status="200"} 1.0'
        in metrics
    )
    assert (
        'rnn_sentiment_http_requests_total{method="POST",route="/predict",status="422"} 1.0'
        in metrics
    )


async def test_a_body_over_the_limit_is_413_on_the_fast_path_too(serve: Callable[..., Any]) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"text": "'
        for _ in range(3):
            yield b"x" * 1024
        yield b'"}'

    async with serve("lstm", max_body_bytes=2048) as client:
        response = await client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
