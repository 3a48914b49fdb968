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
    for command in ("predict", "stream", "tokenize", "explain", "model", "ready"):
        assert command in out
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
