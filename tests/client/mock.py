"""Canned responses and a client on a scripted mock transport, for the tests that need no
server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from rnn_sentiment_client import RetryPolicy, SentimentClient

FAST_RETRY = RetryPolicy(retries=3, backoff_s=0.001, max_backoff_s=5.0)
OK: dict[str, Any] = {
    "label": "positive",
    "score": 0.9,
    "probabilities": {"negative": 0.05, "neutral": 0.05, "positive": 0.9},
    "oov_ratio": 0.0,
    "token_count": 3,
    "truncated": False,
    "warnings": [],
    "confident": None,
    "model": {"name": "m", "version": "v"},
}

Handler = Callable[[httpx.Request], httpx.Response]


def error(status: int, code: str, message: str = "m", **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "details": []}, "request_id": "r-1"}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A transport handler answering with `responses` in turn, and the requests it saw."""
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def mock_client(handler: Handler, **options: Any) -> SentimentClient:
    options.setdefault("retry", FAST_RETRY)
    return SentimentClient("http://svc", transport=httpx.MockTransport(handler), **options)
