"""The CLI's output and exit statuses in process, against a mock service (no server)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
from rnn_sentiment_client import SentimentClient
from rnn_sentiment_client.cli import main

from tests.client.mock import OK, scripted


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`answers(*responses)`: every client the CLI builds talks to a scripted mock service;
    returns the requests it saw."""

    def install(*responses: httpx.Response) -> list[httpx.Request]:
        handler, seen = scripted(*responses)
        transport = httpx.MockTransport(handler)
        original = SentimentClient.__init__

        def with_transport(self: SentimentClient, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs, transport=transport)

        monkeypatch.setattr(SentimentClient, "__init__", with_transport)
        return seen

    return install


def test_predict_reads_stdin_lines_in_one_batch(
    answers: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = answers(httpx.Response(200, json={"predictions": [OK, OK], "model": OK["model"]}))
    monkeypatch.setattr(sys, "stdin", io.StringIO("nice\n  \nlovely\n"))
    assert main(["predict"]) == 0
    assert json.loads(seen[0].content) == {"texts": ["nice", "lovely"]}
    assert capsys.readouterr().out.splitlines() == [
        "positive  0.900  negative=0.050 neutral=0.050 positive=0.900  nice",
        "positive  0.900  negative=0.050 neutral=0.050 positive=0.900  lovely",
    ]


def test_predict_sends_min_confidence_only_when_given(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    confident = {**OK, "confident": True}
    seen = answers(httpx.Response(200, json=confident), httpx.Response(200, json=OK))
    assert main(["--json", "predict", "--min-confidence", "0.8", "nice"]) == 0
    assert main(["predict", "nice"]) == 0
    assert [json.loads(request.content) for request in seen] == [
        {"text": "nice", "min_confidence": 0.8},
        {"text": "nice"},
    ]
    first = capsys.readouterr().out.splitlines()[0]
    assert json.loads(first)["confident"] is True


def test_an_error_response_is_one_line_and_its_details(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = {"loc": ["body", "text"], "msg": "text is empty", "type": "empty_text"}
    error = {"code": "validation_error", "message": "body.text: text is empty", "details": [detail]}
    body = {"error": error, "request_id": "r-9"}
    answers(httpx.Response(422, json=body))
    assert main(["predict", "x"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: 422 validation_error: body.text: text is empty",
        "  body.text: text is empty (empty_text)",
    ]


def test_help_and_usage_mistakes_return_a_status_under_the_given_name(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command line that embeds this one passes its own name and gets a status back."""
    assert main(["--help"], prog="rnn-sentiment client") == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rnn-sentiment client [-h]")
    for command in ("predict", "stream", "tokenize", "explain", "model", "models", "ready"):
        assert command in out
    assert "--model NAME" in out
    assert main(["classify", "x"]) == 2
    assert "usage: rnn-sentiment-client" in capsys.readouterr().err


def test_url_and_key_from_the_environment(
    answers: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RNN_SENTIMENT_URL", "http://elsewhere:9000")
    monkeypatch.setenv("RNN_SENTIMENT_API_KEY", "env-key-0123456789")
    seen = answers(httpx.Response(200, json=OK))
    assert main(["--json", "predict", "fine"]) == 0
    assert str(seen[0].url) == "http://elsewhere:9000/predict"
    assert seen[0].headers["authorization"] == "Bearer env-key-0123456789"
    assert json.loads(capsys.readouterr().out)["label"] == "positive"


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rnn_sentiment_client", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m rnn_sentiment_client")


def test_model_names_the_model_of_every_text_command(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    stream_update = {
        "state": "s",
        "position": 4,
        "token_count": 1,
        "tokens": [],
        "steps": [],
        "pending": [],
        "pending_steps": [],
        "prediction": None,
        "final": True,
        "model": {"name": "tweets", "version": "v"},
    }
    seen = answers(
        httpx.Response(200, json=OK),
        httpx.Response(200, json={"tokens": [], "count": 0, "oov_count": 0, "model": OK["model"]}),
        httpx.Response(200, json=stream_update),
        httpx.Response(200, json=stream_update),
    )
    assert main(["--model", "tweets", "predict", "fine"]) == 0
    assert main(["--model", "tweets", "tokenize", "fine"]) == 0
    assert main(["--model", "tweets", "stream", "--chunk-size", "10", "fine"]) == 0
    assert [json.loads(request.content)["model"] for request in seen] == ["tweets"] * 4
    assert [request.url.path for request in seen] == ["/predict", "/tokenize"] + ["/stream"] * 2


def test_model_from_the_environment_and_none_when_unset(
    answers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = answers(*[httpx.Response(200, json=OK)] * 3)
    monkeypatch.setenv("RNN_SENTIMENT_MODEL", "reviews")
    assert main(["predict", "fine"]) == 0
    assert main(["--model", "tweets", "predict", "fine"]) == 0  # the option wins
    monkeypatch.setenv("RNN_SENTIMENT_MODEL", "")  # empty: no name, the default answers
    assert main(["predict", "fine"]) == 0
    bodies = [json.loads(request.content) for request in seen]
    assert [body.get("model") for body in bodies] == ["reviews", "tweets", None]
    assert "model" not in bodies[2]


SUMMARIES = [
    {
        "name": "default",
        "version": "1f8b67844447",
        "default": True,
        "status": "ready",
        "architecture": {
            "cell": "lstm",
            "embedding_dim": 16,
            "hidden_size": 12,
            "num_layers": 2,
            "bidirectional": False,
            "dropout": 0.0,
            "parameters": 4321,
        },
        "labels": ["negative", "neutral", "positive"],
    },
    {"name": "tweets-v2", "version": "9a0b1c2d3e4f", "default": False, "status": "ready"},
    {
        "name": "old",
        "version": None,
        "default": False,
        "status": "failed",
        "reason": "CheckpointError: no manifest",
    },
]


def test_models_lists_name_status_version_and_marks_the_default(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = answers(*[httpx.Response(200, json={"models": SUMMARIES})] * 2)
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "* default    ready    1f8b67844447",
        "  tweets-v2  ready    9a0b1c2d3e4f",
        "  old        failed   -  CheckpointError: no manifest",
    ]
    assert main(["--json", "models"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["name"], line["status"], line["default"]) for line in lines] == [
        ("default", "ready", True),
        ("tweets-v2", "ready", False),
        ("old", "failed", False),
    ]
    assert [request.url.path for request in seen] == ["/models", "/models"]


def test_model_with_a_name_describes_that_model(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = answers(httpx.Response(200, json=SUMMARIES[0]), httpx.Response(200, json=SUMMARIES[2]))
    assert main(["--model", "default", "model"]) == 0
    assert main(["--model", "old", "model"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "default 1f8b67844447: lstm, 2 layer(s) of 12 units, unidirectional, 4321 weights; "
        "labels negative, neutral, positive",
        "old: failed (CheckpointError: no manifest)",
    ]
    assert [request.url.path for request in seen] == ["/models/default", "/models/old"]


def test_ready_with_a_name_is_that_model_s_status(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = answers(
        httpx.Response(200, json={"status": "ready", "model": OK["model"]}),
        httpx.Response(200, json=SUMMARIES[2]),
    )
    assert main(["--model", "old", "ready"]) == 1
    assert capsys.readouterr().out == "not ready\n"
    assert [request.url.path for request in seen] == ["/readyz", "/models/old"]


def test_an_unknown_model_exits_1_naming_the_known_ones(
    answers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    detail = {"loc": ["body", "model"], "msg": "known models: default", "type": "unknown_model"}
    body = {
        "error": {
            "code": "model_not_found",
            "message": "No model named 'nope'. Known models: default.",
            "details": [detail],
        },
        "request_id": "r-2",
    }
    answers(httpx.Response(404, json=body))
    assert main(["--model", "nope", "explain", "fine"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "error: 404 model_not_found: No model named 'nope'. Known models: default.",
        "  body.model: known models: default (unknown_model)",
    ]
