"""gzip over a real socket: applied above the threshold, not below, not unasked, and no
Accept-Encoding header, however hostile, gets a 500."""

from __future__ import annotations

import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.http.middleware import GZIP_MINIMUM_BYTES
from tests.app.test_server import free_port, running, server_env, wait_ready
from tests.security.conftest import Server

pytestmark = pytest.mark.slow

BATCH = {"texts": [f"review {n}: the plot was thin, but the acting was superb" for n in range(40)]}


def post(
    server: Server, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """POST `body` as JSON with exactly `headers` (no Accept-Encoding unless given): the
    status, the headers and the body as sent on the wire."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.putrequest("POST", path, skip_accept_encoding=True)
        payload = json.dumps(body).encode()
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(payload)))
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(payload)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for the module (as `start_server` starts them): these tests only read."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("gzip") / "server.log"
    env = server_env(checkpoints["gru"], port, APP_ACCESS_LOG="false")
    with running([".venv/bin/python", "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        yield Server(base_url, port, log)


def test_a_large_answer_is_compressed_and_decodes_to_the_same_json(server: Server) -> None:
    status, plain_headers, plain = post(server, "/predict", BATCH, {})
    _, headers, packed = post(server, "/predict", BATCH, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert len(plain) > GZIP_MINIMUM_BYTES
    assert plain_headers["Content-Encoding"] is None
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert int(headers["Content-Length"]) == len(packed) < len(plain)
    assert json.loads(gzip.decompress(packed)) == json.loads(plain)


def test_a_small_answer_is_not_compressed(server: Server) -> None:
    status, headers, body = post(
        server, "/predict", {"text": "lovely"}, {"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert len(body) < GZIP_MINIMUM_BYTES
    assert headers["Content-Encoding"] is None
    assert json.loads(body)["label"]


@pytest.mark.parametrize(
    "accept_encoding",
    [
        pytest.param(None, id="absent"),
        pytest.param("identity", id="identity"),
        pytest.param("gzip;q=0", id="gzip-refused"),
        pytest.param("*;q=0", id="everything-refused"),
        pytest.param("br, zstd", id="others-only"),
    ],
)
def test_no_gzip_unless_it_is_accepted(server: Server, accept_encoding: str | None) -> None:
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    status, response_headers, body = post(server, "/predict", BATCH, headers)
    assert status == 200
    assert response_headers["Content-Encoding"] is None
    assert len(json.loads(body)["predictions"]) == len(BATCH["texts"])


@pytest.mark.parametrize(
    "accept_encoding",
    [
        pytest.param("gzip;q=banana", id="bad-quality"),
        pytest.param("gzip;q=" + "9" * 5000, id="long-quality"),
        pytest.param(",,,;;;=gzip=;q", id="punctuation"),
        pytest.param("gzip, " * 1500, id="many-codings"),
        pytest.param("x" * 7000 + ", gzip", id="long-coding"),
        pytest.param("\t gzip ;\t q=1 \t", id="whitespace"),
        pytest.param("gzip;q=0.5;q=0", id="two-qualities"),
        pytest.param("ÿgzipÿ", id="latin-1"),
    ],
)
def test_a_hostile_accept_encoding_is_never_a_500(server: Server, accept_encoding: str) -> None:
    status, headers, body = post(server, "/predict", BATCH, {"Accept-Encoding": accept_encoding})
    assert status < 500
    if status == 200:
        text = gzip.decompress(body) if headers["Content-Encoding"] == "gzip" else body
        assert len(json.loads(text)["predictions"]) == len(BATCH["texts"])


def test_a_huge_accept_encoding_is_refused_or_served_never_a_500(server: Server) -> None:
    try:
        status, _, _ = post(server, "/predict", BATCH, {"Accept-Encoding": "gzip;q=0.5, " * 6000})
    except (ConnectionError, http.client.RemoteDisconnected):
        return  # the server's header limit closed the connection: fine, it did not crash
    assert status < 500
    status, _, _ = post(server, "/predict", {"text": "still here"}, {})
    assert status == 200


def test_metrics_and_errors_stay_correct_when_compressed(server: Server) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    try:
        connection.putrequest("GET", "/metrics", skip_accept_encoding=True)
        connection.putheader("Accept-Encoding", "gzip")
        connection.endheaders()
        response = connection.getresponse()
        metrics = response.read()
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert b"rnn_sentiment_http_requests_total" in gzip.decompress(metrics)
    finally:
        connection.close()
    status, headers, body = post(
        server, "/predict", {"texts": [" "] * 50}, {"Accept-Encoding": "gzip"}
    )
    assert status == 422
    assert headers["Content-Encoding"] == "gzip"
    assert json.loads(gzip.decompress(body))["error"]["code"] == "validation_error"
