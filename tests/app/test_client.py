"""The Python client (`app.client`): retries, typed errors, every method, and the CLI.

Retries and errors are tested against `httpx.MockTransport`; the methods against the app in
process (async client over ASGI) and against real uvicorn processes over loopback (sync client,
CLI, WebSocket, and a stream carried from one server process to another).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.api.schemas import BatchPredictResponse, PredictResponse
from app.client import (
    APIConnectionError,
    AsyncSentimentClient,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidRequestError,
    RetryPolicy,
    SentimentClient,
    ServerError,
    StreamStateError,
    UnavailableError,
    main,
)
from app.main import create_app
from tests.app.test_server import free_port
from tests.app.test_server import uvicorn_server as real_uvicorn_server

REPO = Path(__file__).resolve().parents[2]
SECRET = "client-tests-stream-secret"
TEXT = "The food was great but the service was painfully slow :("
FAST_RETRY = RetryPolicy(retries=3, backoff_s=0.001, max_backoff_s=5.0)

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


OK = {
    "label": "positive",
    "score": 0.9,
    "probabilities": {"negative": 0.05, "neutral": 0.05, "positive": 0.9},
    "model": {"name": "m", "version": "v"},
}


# ---------------------------------------------------------------------------------------------
# Light, retries, errors


def test_the_client_imports_neither_torch_nor_fastapi() -> None:
    code = (
        "import sys, app.client; "
        "print([m for m in ('torch', 'fastapi', 'starlette', 'uvicorn') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


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
    assert [json.loads(request.content) for request in seen] == [
        {"text": "one"},
        {"texts": ["one", "two"]},
    ]


# ---------------------------------------------------------------------------------------------
# The async client against the app, in process


@pytest.fixture
async def async_client(make_settings: Any) -> AsyncIterator[AsyncSentimentClient]:
    # Streams are compared with /predict to float32's precision (tests/app/stream/).
    app = create_app(make_settings("lstm", stream_secret=SECRET, inference_dtype="float32"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with AsyncSentimentClient("http://testserver", transport=transport) as client:
            yield client


@pytest.mark.anyio
async def test_async_client_methods(async_client: AsyncSentimentClient) -> None:
    assert await async_client.ready()
    single = await async_client.predict(TEXT)
    batch = await async_client.predict([TEXT, "ok"])
    assert batch.predictions[0].probabilities == single.probabilities
    states = await async_client.hidden_states(TEXT, layers="all", include_gates=True, top_k=3)
    assert len(states.layers) == 2
    assert states.layers[0].gates is not None
    tokens = await async_client.tokenize(TEXT)
    assert [token.text for token in tokens.tokens] == [token.text for token in states.tokens]
    explanation = await async_client.explain(TEXT, methods=["occlusion"])
    assert explanation.occlusion is not None
    assert explanation.integrated_gradients is None
    card = await async_client.model_info()
    assert card.version == single.model.version
    with pytest.raises(InvalidRequestError) as caught:
        await async_client.predict("   ")
    assert caught.value.details[0].type == "empty_text"


@pytest.mark.anyio
async def test_async_stream_from_an_async_source(async_client: AsyncSentimentClient) -> None:
    async def typed() -> AsyncIterator[str]:
        for start in range(0, len(TEXT), 5):
            await asyncio.sleep(0)
            yield TEXT[start : start + 5]

    updates = [update async for update in async_client.stream(typed())]
    one_shot = await async_client.predict(TEXT)
    assert len(updates) == len(range(0, len(TEXT), 5)) + 1
    assert updates[-1].final
    assert updates[-1].prediction is not None
    for label, p in one_shot.probabilities.items():
        assert abs(updates[-1].prediction.probabilities[label] - p) <= 1e-5
    with pytest.raises(StreamStateError):
        await async_client.stream_update("more", updates[-1].state)


# ---------------------------------------------------------------------------------------------
# Real uvicorn processes over loopback


@contextmanager
def uvicorn_server(model_dir: Path, log: Path, **settings: str) -> Iterator[str]:
    """The shared real server, checked ready through the sync client as well."""
    with real_uvicorn_server(model_dir, log, **settings) as base_url:
        with SentimentClient(base_url) as client:
            assert client.ready()
        yield base_url


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("client-server") / "uvicorn.log"
    settings = {"APP_STREAM_SECRET": SECRET, "APP_API_KEYS": "client-key-0123456789"}
    with uvicorn_server(checkpoints["gru"], log, **settings) as base_url:
        yield base_url


@pytest.mark.slow
def test_sync_client_against_a_real_server(server: str) -> None:
    with SentimentClient(server, api_key="client-key-0123456789") as client:
        ready = client.wait_ready(timeout_s=5)
        single = client.predict(TEXT)
        batch = client.predict([TEXT, "fine"])
        assert ready.model == single.model
        assert batch.predictions[0].probabilities == single.probabilities
        states = client.hidden_states(TEXT, decimals=3, units=[0, 1])
        assert states.layers[0].units == [0, 1]
        assert client.tokenize(TEXT).count == len(states.tokens)
        explanation = client.explain(TEXT, label="negative", steps=8)
        assert explanation.label == "negative"
        assert client.model_info().architecture.cell == "gru"
        pieces = [TEXT[i : i + 3] for i in range(0, len(TEXT), 3)]
        updates = list(client.stream(pieces))
        assert updates[-1].prediction is not None
        for label, p in single.probabilities.items():
            assert abs(updates[-1].prediction.probabilities[label] - p) <= 1e-5
        assert "".join(t.text for u in updates for t in u.tokens) == TEXT.replace(" ", "")
    with SentimentClient(server) as anonymous, pytest.raises(AuthenticationError):
        anonymous.predict(TEXT)


@pytest.mark.slow
def test_a_stream_moves_between_server_processes(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Two replicas with one APP_STREAM_SECRET: each piece may go to either."""
    settings = {"APP_STREAM_SECRET": SECRET, "APP_INFERENCE_DTYPE": "float32"}
    with (
        uvicorn_server(checkpoints["lstm"], tmp_path / "a.log", **settings) as first,
        uvicorn_server(checkpoints["lstm"], tmp_path / "b.log", **settings) as second,
        SentimentClient(first) as one,
        SentimentClient(second) as other,
    ):
        state = None
        for index, start in enumerate(range(0, len(TEXT), 7)):
            replica = (one, other)[index % 2]
            state = replica.stream_update(TEXT[start : start + 7], state).state
        last = other.stream_update("", state, final=True)
        expected = one.predict(TEXT)
    assert last.prediction is not None
    for label, p in expected.probabilities.items():
        assert abs(last.prediction.probabilities[label] - p) <= 1e-5


@pytest.mark.slow
def test_websocket_against_a_real_server(server: str) -> None:
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    url = server.replace("http://", "ws://") + "/stream/ws"
    with connect(url, additional_headers={"Authorization": "Bearer client-key-0123456789"}) as ws:
        ws.send(json.dumps({"text": "The food was gre"}))
        first = json.loads(ws.recv())
        ws.send(json.dumps({"text": "at", "state": first["state"], "final": True}))
        last = json.loads(ws.recv())
    assert [token["text"] for token in last["tokens"]] == ["great"]
    with connect(url) as ws:
        ws.send(json.dumps({"api_key": "client-key-0123456789"}))
        assert json.loads(ws.recv()) == {"authenticated": True}
        ws.send(b"binary")
        refusal = json.loads(ws.recv())
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    assert refusal["error"]["code"] == "unsupported_data"
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1003, "unsupported_data")


def run_cli(server: str, *args: str, stdin: str = "") -> tuple[int, str, str]:
    result = subprocess.run(
        [sys.executable, "-m", "app.client", "--url", server, *args],
        check=False,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "RNN_SENTIMENT_API_KEY": "client-key-0123456789"},
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.slow
def test_cli_against_a_real_server(server: str) -> None:
    code, out, _ = run_cli(server, "predict", TEXT)
    assert code == 0
    label, score, probabilities = out.split("  ")[:3]
    assert label.strip() in {"negative", "neutral", "positive"}
    assert 0 < float(score) <= 1
    assert probabilities.startswith("negative=")
    assert out.rstrip("\n").endswith(TEXT)
    code, out, _ = run_cli(server, "--json", "predict", stdin="good food\n\nbad service\n")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [line["text"] for line in lines] == ["good food", "bad service"]
    assert set(lines[0]) == {"text", "label", "score", "probabilities"}
    code, out, _ = run_cli(server, "stream", "--chunk-size", "10", TEXT)
    assert code == 0
    assert out.splitlines()[-1].startswith("final")
    code, out, _ = run_cli(server, "tokenize", "isn't it")
    assert "'n\\'t' -> not" in out or '"n\'t" -> not' in out
    code, out, _ = run_cli(server, "model")
    assert code == 0
    assert "gru" in out
    code, out, _ = run_cli(server, "ready")
    assert (code, out) == (0, "ready\n")
    code, _, err = run_cli(server, "predict", "   ")
    assert code == 1
    assert "422 validation_error" in err
    assert "body.text: text must contain at least one non-whitespace character" in err
    code, _, err = run_cli(f"http://127.0.0.1:{free_port()}", "ready")
    assert code == 1


def test_cli_in_process_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's readable output, against a mock service (no server needed)."""
    batch = {"predictions": [OK, OK], "model": OK["model"]}
    handler, seen = scripted(httpx.Response(200, json=batch))
    transport = httpx.MockTransport(handler)
    original = SentimentClient.__init__

    def with_transport(self: SentimentClient, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs, transport=transport)

    monkeypatch.setattr(SentimentClient, "__init__", with_transport)
    out = io.StringIO()
    code = main(["predict"], stdin=io.StringIO("nice\n  \nlovely\n"), out=out)
    assert code == 0
    assert json.loads(seen[0].content) == {"texts": ["nice", "lovely"]}
    assert out.getvalue().splitlines() == [
        "positive  0.900  negative=0.050 neutral=0.050 positive=0.900  nice",
        "positive  0.900  negative=0.050 neutral=0.050 positive=0.900  lovely",
    ]
