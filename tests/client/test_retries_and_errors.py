"""Retries, typed errors and request bodies, against `httpx.MockTransport` (no server)."""

from __future__ import annotations

import inspect
import json
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from rnn_sentiment_client import (
    APIConnectionError,
    AsyncSentimentClient,
    AuthenticationError,
    BadRequestError,
    BatchPredictResponse,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PredictResponse,
    RetryPolicy,
    SentimentClient,
    ServerError,
    StreamStateError,
    UnavailableError,
)
from rnn_sentiment_client._models import HiddenStatesRequest

from tests.client.mock import OK, error, mock_client, scripted


def test_503_and_429_are_retried_honouring_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    handler, seen = scripted(
        error(503, "overloaded", **{"retry-after": "2"}),
        error(429, "rate_limited", **{"retry-after": "0"}),
        httpx.Response(200, json=OK),
    )
    with mock_client(handler) as client:
        result = client.predict("good")
    assert isinstance(result, PredictResponse)
    assert result.label == "positive"
    assert waits == [2.0, 0.0]
    assert len(seen) == 3


def test_retry_after_as_an_http_date(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    handler, _ = scripted(
        error(503, "overloaded", **{"retry-after": later}), httpx.Response(200, json=OK)
    )
    with mock_client(handler) as client:
        client.predict("good")
    assert 1.0 < waits[0] <= 3.0


def test_a_retry_after_longer_than_the_longest_wait_is_raised_at_once() -> None:
    handler, seen = scripted(
        error(503, "not_ready", "The model is not loaded yet", **{"retry-after": "60"})
    )
    with mock_client(handler) as client, pytest.raises(UnavailableError) as caught:
        client.predict("good")
    assert len(seen) == 1
    assert caught.value.retry_after == 60.0
    assert (caught.value.status_code, caught.value.code) == (503, "not_ready")
    assert caught.value.request_id == "r-1"
    assert str(caught.value) == "503 not_ready: The model is not loaded yet"


def test_retries_give_up_with_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    handler, seen = scripted(*[error(503, "overloaded") for _ in range(4)])
    with mock_client(handler) as client, pytest.raises(UnavailableError):
        client.predict("good")
    assert len(seen) == 4
    # Exponential backoff with jitter: each wait within [half, all] of 1, 2, 4 x backoff_s.
    assert len(waits) == 3
    for attempt, wait in enumerate(waits):
        assert 0.0005 * 2**attempt <= wait <= 0.001 * 2**attempt


def test_no_retries_when_the_policy_says_none() -> None:
    handler, seen = scripted(error(503, "overloaded"))
    with (
        mock_client(handler, retry=RetryPolicy(retries=0)) as client,
        pytest.raises(UnavailableError),
    ):
        client.predict("good")
    assert len(seen) == 1


def test_connection_failures_are_retried_then_raised() -> None:
    refused = httpx.ConnectError("connection refused")
    handler, seen = scripted(refused, httpx.ReadTimeout("slow"), httpx.Response(200, json=OK))
    with mock_client(handler) as client:
        assert client.predict("good").label == "positive"
    handler, seen = scripted(*[refused] * 4)
    with mock_client(handler) as client, pytest.raises(APIConnectionError, match="ConnectError"):
        client.predict("good")
    assert len(seen) == 4


@pytest.mark.parametrize(
    ("response", "kind", "code"),
    [
        pytest.param(error(400, "malformed_json"), BadRequestError, "malformed_json", id="400"),
        pytest.param(error(401, "unauthorized"), AuthenticationError, "unauthorized", id="401"),
        pytest.param(error(404, "not_found"), NotFoundError, "not_found", id="404"),
        pytest.param(
            error(409, "streaming_unsupported"), ConflictError, "streaming_unsupported", id="409"
        ),
        pytest.param(
            error(409, "state_model_mismatch"),
            StreamStateError,
            "state_model_mismatch",
            id="409-state",
        ),
        pytest.param(
            error(422, "invalid_state"), StreamStateError, "invalid_state", id="422-state"
        ),
        pytest.param(error(500, "internal_error"), ServerError, "internal_error", id="500"),
        pytest.param(
            httpx.Response(502, text="<html>Bad Gateway</html>"),
            ServerError,
            "http_502",
            id="proxy",
        ),
    ],
)
def test_errors_are_typed_and_not_retried(
    response: httpx.Response, kind: type[Exception], code: str
) -> None:
    handler, seen = scripted(response)
    with mock_client(handler) as client, pytest.raises(kind) as caught:
        client.predict("good")
    assert getattr(caught.value, "code", None) == code
    assert len(seen) == 1


def test_validation_details_are_parsed() -> None:
    body = {
        "error": {
            "code": "validation_error",
            "message": "body.text: text has 9 characters; the limit is 5",
            "details": [
                {
                    "loc": ["body", "text"],
                    "msg": "text has 9 characters; the limit is 5",
                    "type": "text_too_long",
                }
            ],
        },
        "request_id": "abc",
    }
    handler, _ = scripted(httpx.Response(422, json=body))
    with mock_client(handler) as client, pytest.raises(InvalidRequestError) as caught:
        client.predict("too long!")
    (detail,) = caught.value.details
    assert (detail.loc, detail.type) == (["body", "text"], "text_too_long")


def test_requests_carry_the_api_key_and_the_right_bodies() -> None:
    batch = {"predictions": [OK, OK], "model": OK["model"]}
    handler, seen = scripted(httpx.Response(200, json=OK), httpx.Response(200, json=batch))
    with mock_client(handler, api_key="secret-key-1") as client:
        client.predict("one")
        result = client.predict(("one", "two"))
    assert isinstance(result, BatchPredictResponse)
    assert [request.headers["authorization"] for request in seen] == ["Bearer secret-key-1"] * 2
    assert [request.headers["user-agent"] for request in seen] == ["rnn-sentiment-client/0.1.0"] * 2
    assert [json.loads(request.content) for request in seen] == [
        {"text": "one"},
        {"texts": ["one", "two"]},
    ]


def test_options_left_unset_are_not_sent() -> None:
    """An option the caller did not set is absent, so the service applies its own default (and
    an older service, which refuses unknown fields, is not sent one)."""
    handler, seen = scripted(*[httpx.Response(500, json={})] * 5)
    with mock_client(handler, retry=RetryPolicy(retries=0)) as client:
        for call in (
            lambda: client.hidden_states("t", top_k=3),
            lambda: client.hidden_states("t", full=True),
            lambda: client.explain("t", methods=("occlusion",)),
            lambda: client.stream_update("The fo"),
            lambda: client.stream_update("od", "signed-state", final=True),
        ):
            with pytest.raises(ServerError):
                call()
    assert [json.loads(request.content) for request in seen] == [
        {
            "text": "t",
            "layers": "last",
            "include_cell_state": False,
            "include_gates": False,
            "top_k": 3,
        },
        {
            "text": "t",
            "layers": "last",
            "include_cell_state": False,
            "include_gates": False,
            "full": True,
        },
        {"text": "t", "methods": ["occlusion"]},
        {"text": "The fo", "final": False},
        {"text": "od", "state": "signed-state", "final": True},
    ]


def test_a_request_body_names_only_its_model_fields() -> None:
    assert HiddenStatesRequest.body(text="t", top_k=None) == {"text": "t"}
    with pytest.raises(TypeError, match="HiddenStatesRequest has no field top"):
        HiddenStatesRequest.body(text="t", top=3)


def test_responses_ignore_fields_a_newer_server_adds() -> None:
    newer = {**OK, "calibrated": True, "model": {**OK["model"], "trained_on": "x"}}
    handler, _ = scripted(httpx.Response(200, json=newer))
    with mock_client(handler) as client:
        result = client.predict("good")
    assert (result.label, result.model.version) == ("positive", "v")
    assert "calibrated" not in result.model_dump()


def test_both_clients_offer_the_same_methods() -> None:
    def public(cls: type) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(member).parameters)
            for name, member in inspect.getmembers(cls, inspect.isfunction)
            if not name.startswith("_")
        }

    sync, asynchronous = public(SentimentClient), public(AsyncSentimentClient)
    assert sync.pop("close") == asynchronous.pop("aclose")
    assert sync == asynchronous
    assert {"predict", "hidden_states", "stream", "wait_ready"} <= set(sync)
