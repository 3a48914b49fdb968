"""The client and its CLI against a real uvicorn process serving a store of two models.

The store is two tiny checkpoints of different cells (an LSTM as `default`, a GRU as
`tweets`), so an answer from one cannot pass for the other's: each model is reached by name,
listed, and an unknown name is refused with the known ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rnn_sentiment_client import (
    AsyncSentimentClient,
    ModelNotFoundError,
    SentimentClient,
    StreamStateError,
)

from tests.app.test_server import free_port, running, server_env, wait_ready

REPO = Path(__file__).resolve().parents[2]
TEXT = "The food was great but the service was painfully slow :("
MODELS = {"default": "lstm", "tweets": "gru"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store_server(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`uvicorn app.main:app` serving APP_MODEL_STORE=<a store of MODELS>; its base URL."""
    root = tmp_path_factory.mktemp("client-store")
    store = root / "store"
    for name, kind in MODELS.items():
        shutil.copytree(checkpoints[kind], store / name)
    port = free_port()
    env = server_env(store / "default", port, APP_ACCESS_LOG="false")
    # A store, not one model: the two settings together are refused.
    del env["APP_MODEL_DIR"]
    env.update({"APP_MODEL_STORE": str(store), "APP_INFERENCE_DTYPE": "float32"})
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    log = root / "uvicorn.log"
    with running([*command, "--port", str(port)], env, log) as process:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, process, log)
        yield base_url


def test_each_model_answers_by_name(store_server: str) -> None:
    with SentimentClient(store_server) as client:
        unnamed = client.predict(TEXT)
        answers = {name: client.predict(TEXT, model=name) for name in MODELS}
        assert unnamed.model == answers["default"].model
        assert unnamed.probabilities == answers["default"].probabilities
        assert {name: answer.model.name for name, answer in answers.items()} == {
            "default": "default",
            "tweets": "tweets",
        }
        assert answers["tweets"].model.version != answers["default"].model.version
        assert answers["tweets"].probabilities != answers["default"].probabilities

        batch = client.predict([TEXT, "fine"], model="tweets")
        assert batch.model.name == "tweets"
        assert batch.predictions[0].probabilities == answers["tweets"].probabilities
        states = client.hidden_states(TEXT, model="tweets", layers="all")
        assert states.model.name == "tweets"
        assert client.tokenize(TEXT, model="tweets").model.name == "tweets"
        explanation = client.explain(TEXT, model="tweets", steps=4)
        assert explanation.model.name == "tweets"
        assert explanation.prediction.probabilities == answers["tweets"].probabilities

        pieces = [TEXT[i : i + 9] for i in range(0, len(TEXT), 9)]
        for name in MODELS:
            updates = list(client.stream(pieces, model=name))
            assert {update.model.name for update in updates} == {name}
            last = updates[-1].prediction
            assert last is not None
            for label, p in answers[name].probabilities.items():
                assert abs(last.probabilities[label] - p) <= 1e-5


def test_a_stream_state_belongs_to_the_model_that_made_it(store_server: str) -> None:
    with SentimentClient(store_server) as client:
        state = client.stream_update("The food was ", model="tweets").state
        with pytest.raises(StreamStateError):
            client.stream_update("great", state)  # the default model: not this stream's


def test_the_async_client_names_a_model_too(store_server: str) -> None:
    async def ask() -> tuple[str, str]:
        async with AsyncSentimentClient(store_server) as client:
            single = await client.predict(TEXT, model="tweets")
            summary = await client.get_model("tweets")
        return single.model.name, summary.status

    assert asyncio.run(ask()) == ("tweets", "ready")


def test_models_lists_both_the_default_first(store_server: str) -> None:
    with SentimentClient(store_server) as client:
        listed = client.models().models
        versions = {name: client.predict("fine", model=name).model.version for name in MODELS}
        tweets = client.get_model("tweets")
        ready = client.wait_ready(timeout_s=5)
    assert [(m.name, m.default, m.status) for m in listed] == [
        ("default", True, "ready"),
        ("tweets", False, "ready"),
    ]
    assert {m.name: m.version for m in listed} == versions
    assert [m.architecture.cell if m.architecture else None for m in listed] == ["lstm", "gru"]
    assert tweets == listed[1]
    assert [(m.name, m.status) for m in ready.models] == [("default", "ready"), ("tweets", "ready")]
    assert ready.model.name == "default"


def test_an_unknown_name_is_a_model_not_found_error(store_server: str) -> None:
    with SentimentClient(store_server) as client:
        for call in (
            lambda: client.predict(TEXT, model="nope"),
            lambda: client.predict([TEXT], model="nope"),
            lambda: client.stream_update("The food", model="nope"),
            lambda: client.explain(TEXT, model="nope"),
            lambda: client.get_model("nope"),
        ):
            with pytest.raises(ModelNotFoundError) as caught:
                call()
            assert caught.value.status_code == 404
            assert caught.value.known == list(MODELS)


def run_cli(server: str, *args: str, **env: str) -> tuple[int, str, str]:
    """`python -m rnn_sentiment_client --url <server> args...` in its own process."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RNN_SENTIMENT_")}
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment_client", "--url", server, *args],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=60,
    )
    return result.returncode, result.stdout, result.stderr


def test_the_cli_model_option(store_server: str) -> None:
    with SentimentClient(store_server) as client:
        expected = {name: client.predict(TEXT, model=name) for name in MODELS}

    code, out, err = run_cli(store_server, "--json", "--model", "tweets", "predict", TEXT)
    assert (code, err) == (0, "")
    assert json.loads(out)["probabilities"] == expected["tweets"].probabilities
    code, out, _ = run_cli(store_server, "--json", "predict", TEXT, RNN_SENTIMENT_MODEL="tweets")
    assert json.loads(out)["probabilities"] == expected["tweets"].probabilities
    code, out, _ = run_cli(store_server, "--json", "predict", TEXT)
    assert json.loads(out)["probabilities"] == expected["default"].probabilities

    code, out, _ = run_cli(store_server, "--model", "tweets", "model")
    assert code == 0
    assert out.startswith(f"tweets {expected['tweets'].model.version}: gru, ")
    code, out, _ = run_cli(store_server, "--model", "tweets", "ready")
    assert (code, out) == (0, "ready\n")

    code, out, _ = run_cli(store_server, "models")
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["*", "default", "ready", expected["default"].model.version],
        ["tweets", "ready", expected["tweets"].model.version],
    ]

    code, out, err = run_cli(store_server, "--model", "nope", "predict", TEXT)
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == (
        "error: 404 model_not_found: No model named 'nope'. Known models: default, tweets."
    )
