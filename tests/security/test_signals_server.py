"""/predict's signals, warnings and `confident` from a real server over a socket, through the
Python client, and hostile `min_confidence` values answered 422, never 500."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from rnn_sentiment_client import InvalidRequestError, SentimentClient

from tests.app.test_signals import LONG, PLAIN, SHORT, UNKNOWN, signals_checkpoint
from tests.security.conftest import Server, StartServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoints(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The session's tiny checkpoints, and "signals": one whose card gives a training limit."""
    return {**checkpoints, "signals": signals_checkpoint(tmp_path_factory.mktemp("sig") / "m")}


def post_raw(server: Server, payload: bytes) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.request(
            "POST", "/predict", body=payload, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        body: dict[str, Any] = json.loads(response.read())
        return response.status, body
    finally:
        connection.close()


def test_signals_and_thresholds_from_a_real_server(start_server: StartServer) -> None:
    server = start_server("signals", APP_MIN_CONFIDENCE="0.99")
    with SentimentClient(server.base_url) as client:
        batch = client.predict([UNKNOWN, SHORT, LONG, PLAIN]).predictions
        alone = client.predict(UNKNOWN)
        lenient = client.predict(PLAIN, min_confidence=0.0)
    assert [(p.token_count, p.oov_ratio, p.truncated) for p in batch] == [
        (4, 0.75, False),
        (1, 0.0, False),
        (10, 0.0, True),
        (4, 0.0, False),
    ]
    assert [p.warnings for p in batch] == [
        ["mostly_unknown_words", "low_confidence"],
        ["very_short", "low_confidence"],
        ["truncated", "low_confidence"],
        ["low_confidence"],
    ]
    assert [p.confident for p in batch] == [False] * 4  # the setting: 0.99
    assert alone.model_dump(exclude={"model"}) == batch[0].model_dump()
    assert (lenient.confident, lenient.warnings) == (True, [])


def test_without_a_threshold_confident_is_null(start_server: StartServer) -> None:
    server = start_server("signals")
    status, body = post_raw(server, b'{"text": "great"}')
    assert status == 200
    assert body["confident"] is None
    assert body["warnings"] == ["very_short"]


HOSTILE = [
    b'{"text": "ok", "min_confidence": NaN}',
    b'{"text": "ok", "min_confidence": Infinity}',
    b'{"text": "ok", "min_confidence": "NaN"}',
    b'{"text": "ok", "min_confidence": "0.5"}',
    b'{"text": "ok", "min_confidence": -0.5}',
    b'{"text": "ok", "min_confidence": 1.0000001}',
    b'{"text": "ok", "min_confidence": 1e999}',
    b'{"text": "ok", "min_confidence": false}',
    b'{"texts": ["ok"], "min_confidence": [1]}',
]


def test_hostile_min_confidence_is_a_422(start_server: StartServer) -> None:
    server = start_server("signals")
    for payload in HOSTILE:
        status, body = post_raw(server, payload)
        assert status == 422, (payload, body)
        assert body["error"]["code"] == "validation_error"
        assert body["error"]["details"], payload
    assert post_raw(server, b'{"text": "ok", "min_confidence": 0.5}')[0] == 200  # still serving


def test_the_client_reports_a_refused_threshold(start_server: StartServer) -> None:
    server = start_server("signals")
    with SentimentClient(server.base_url) as client, pytest.raises(InvalidRequestError) as caught:
        client.predict("ok", min_confidence=2.0)
    assert "min_confidence" in str(caught.value.details)
