"""The client and its CLI against real uvicorn processes over loopback: the sync client, the
CLI, the WebSocket, and a stream carried from one server process to another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rnn_sentiment_client import AuthenticationError, SentimentClient

from tests.app.test_server import free_port
from tests.app.test_server import uvicorn_server as real_uvicorn_server

REPO = Path(__file__).resolve().parents[2]
SECRET = "client-tests-stream-secret"
API_KEY = "client-key-0123456789"
TEXT = "The food was great but the service was painfully slow :("


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
    settings = {"APP_STREAM_SECRET": SECRET, "APP_API_KEYS": API_KEY}
    with uvicorn_server(checkpoints["gru"], log, **settings) as base_url:
        yield base_url


@pytest.mark.slow
def test_sync_client_against_a_real_server(server: str) -> None:
    with SentimentClient(server, api_key=API_KEY) as client:
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
    with connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
        ws.send(json.dumps({"text": "The food was gre"}))
        first = json.loads(ws.recv())
        ws.send(json.dumps({"text": "at", "state": first["state"], "final": True}))
        last = json.loads(ws.recv())
    assert [token["text"] for token in last["tokens"]] == ["great"]
    with connect(url) as ws:
        ws.send(json.dumps({"api_key": API_KEY}))
        assert json.loads(ws.recv()) == {"authenticated": True}
        ws.send(b"binary")
        refusal = json.loads(ws.recv())
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
    assert refusal["error"]["code"] == "unsupported_data"
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1003, "unsupported_data")


def run_cli(
    server: str, *args: str, stdin: str = "", command: tuple[str, ...] | None = None
) -> tuple[int, str, str]:
    """The CLI in its own process: `python -m rnn_sentiment_client` unless `command` says."""
    result = subprocess.run(
        [*(command or (sys.executable, "-m", "rnn_sentiment_client")), "--url", server, *args],
        check=False,
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "RNN_SENTIMENT_API_KEY": API_KEY},
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
    assert set(lines[0]) == {
        "text",
        "label",
        "score",
        "probabilities",
        "oov_ratio",
        "token_count",
        "truncated",
        "warnings",
        "confident",
    }
    code, out, _ = run_cli(server, "stream", "--chunk-size", "10", TEXT)
    assert code == 0
    assert out.splitlines()[-1].startswith("final")
    code, out, _ = run_cli(server, "tokenize", "isn't it")
    assert "'n\\'t' -> not" in out or '"n\'t" -> not' in out
    code, out, _ = run_cli(server, "explain", "isn't it", "--label", "positive")
    assert code == 0
    assert "attributions toward positive:" in out
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


@pytest.mark.slow
def test_the_installed_console_script(server: str) -> None:
    """`rnn-sentiment-client`, the entry point pip writes next to the interpreter."""
    script = Path(sys.executable).with_name("rnn-sentiment-client")
    code, out, err = run_cli(server, "predict", "lovely", command=(str(script),))
    assert (code, err) == (0, "")
    assert out.rstrip("\n").endswith("  lovely")
