"""`rnn-sentiment predict` answers as the service does: for every input format, each output line
is the service's own POST /predict answer for that text, with the line it came from."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app
from rnn_sentiment.predict import _progress
from rnn_sentiment.predict import main as predict_main
from tests.cli.conftest import assert_one_line_error, rnn_sentiment

TEXTS = [
    "I love this film, it is great and wonderful :)",
    "The service was terrible and the food was awful :(",
    "It arrived on Tuesday in a brown box.",
    "Not bad at all, but the ending didn't work for me.",
    "ok",
    "Best purchase ever!!! Highly recommend @shop #happy " * 12,  # a long one, its own length
    "Worst hotel I have stayed in, never again.",
]


def service_answers(model_dir: Path, texts: list[str]) -> list[dict[str, Any]]:
    """The service's POST /predict body for each text, one request per text."""

    async def ask() -> list[dict[str, Any]]:
        app = create_app(Settings(model_dir=model_dir, gc_freeze=False))
        async with (
            LifespanManager(app) as manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
            ) as client,
        ):
            answers = []
            for text in texts:
                response = await client.post("/predict", json={"text": text})
                assert response.status_code == 200, response.text
                answers.append(response.json())
            return answers

    return asyncio.run(ask())


def scored(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_predict(*args: str | Path) -> int:
    return predict_main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def expected(checkpoints: dict[str, Path]) -> list[dict[str, Any]]:
    return service_answers(checkpoints["lstm"], TEXTS)


def test_lines_one_text_per_line_blank_lines_skipped(
    checkpoints: dict[str, Path], tmp_path: Path, expected: list[dict[str, Any]]
) -> None:
    source = tmp_path / "texts.txt"
    # Blank and whitespace-only lines between the texts, and a Windows line end.
    source.write_text("\n".join(TEXTS[:3]) + "\n\n   \n" + "\r\n".join(TEXTS[3:]) + "\n\n")
    out = tmp_path / "scores.jsonl"
    assert run_predict(source, "--model-dir", checkpoints["lstm"], "--out", out) == 0
    answers = scored(out)
    assert [answer.pop("line") for answer in answers] == [1, 2, 3, 6, 7, 8, 9]
    assert answers == expected  # label, score, probabilities and model: the service's


def test_csv_text_column_with_quoted_line_breaks(
    checkpoints: dict[str, Path], tmp_path: Path, expected: list[dict[str, Any]]
) -> None:
    texts = [*TEXTS[:-1], "Worst hotel I have stayed in,\nnever again."]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "review"])
    writer.writerows([index, text] for index, text in enumerate(texts))
    source = tmp_path / "reviews.csv"
    source.write_text(buffer.getvalue())
    out = tmp_path / "scores.jsonl"
    code = run_predict(
        source, "--format", "csv", "--text-field", "review",
        "--model-dir", checkpoints["lstm"], "--out", out,
    )  # fmt: skip
    assert code == 0
    answers = scored(out)
    assert [answer.pop("line") for answer in answers] == [2, 3, 4, 5, 6, 7, 8]
    assert answers[:-1] == expected[:-1]
    assert answers[-1] == service_answers(checkpoints["lstm"], texts[-1:])[0]


def test_jsonl_from_stdin_to_stdout(
    checkpoints: dict[str, Path], expected: list[dict[str, Any]]
) -> None:
    lines = [json.dumps({"body": text, "id": index}) for index, text in enumerate(TEXTS)]
    result = rnn_sentiment(
        "predict", "-", "--format", "jsonl", "--text-field", "body",
        "--model-dir", str(checkpoints["lstm"]),
        stdin="\n".join(lines) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [answer.pop("line") for answer in answers] == list(range(1, len(TEXTS) + 1))
    assert answers == expected


def test_lines_from_stdin_in_small_batches_give_the_same_answers(
    checkpoints: dict[str, Path], expected: list[dict[str, Any]]
) -> None:
    result = rnn_sentiment(
        "predict", "-", "--batch-size", "2", "--model-dir", str(checkpoints["lstm"]),
        stdin="\n".join(TEXTS) + "\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [{k: v for k, v in answer.items() if k != "line"} for answer in answers] == expected


def test_a_text_with_nothing_readable_gets_an_error_object(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "texts.jsonl"
    source.write_text(json.dumps({"text": "\u200b\u200b"}) + "\n" + json.dumps({"text": "ok"}))
    out = tmp_path / "scores.jsonl"
    code = run_predict(
        source, "--format", "jsonl", "--model-dir", checkpoints["lstm"], "--out", out
    )
    assert code == 0
    refused, answered = scored(out)
    assert refused["line"] == 1
    assert refused["error"]["code"] == "no_tokens"
    assert answered["line"] == 2
    assert answered["label"] in answered["probabilities"]
    assert capsys.readouterr().err.startswith("rnn-sentiment: 1 text(s) had nothing")


def test_replacing_an_existing_out_needs_force(
    checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("good\n")
    out = tmp_path / "scores.jsonl"
    out.write_text("keep me\n")
    model = checkpoints["lstm"]
    assert run_predict(source, "--model-dir", model, "--out", out) == 2
    assert capsys.readouterr().err == (
        f"rnn-sentiment: --out {out} already exists: pass --force to replace it, or choose "
        "another --out\n"
    )
    assert out.read_text() == "keep me\n"
    assert run_predict(source, "--model-dir", model, "--out", out, "--force") == 0
    assert scored(out)[0]["line"] == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["scores.jsonl", "texts.txt"]


@pytest.mark.parametrize(
    ("name", "content", "options", "message"),
    [
        ("in.csv", "id,body\n1,good\n", ["--format", "csv"],
         "in.csv:1: no column 'text' in the header (columns: ['id', 'body']); pass --text-field"),
        ("in.csv", "", ["--format", "csv"], "in.csv: the file is empty (a header row is required)"),
        ("in.jsonl", '{"text": "good"}\n{"body": "bad"}\n', ["--format", "jsonl"],
         "in.jsonl:2: no key 'text' (keys: ['body']); pass --text-field"),
        ("in.jsonl", '{"text": "good"}\nnot json\n', ["--format", "jsonl"],
         "in.jsonl:2: invalid JSON (Expecting value at column 1)"),
        ("in.txt", b"good\n\xff\xfe bad\n", [],
         "in.txt:2: not valid UTF-8 (save the file as UTF-8)"),
    ],
)  # fmt: skip
def test_a_malformed_input_stops_with_one_line_and_writes_nothing(
    checkpoints: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes,
    options: list[str],
    message: str,
) -> None:
    source = tmp_path / name
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    out = tmp_path / "scores.jsonl"
    code = run_predict(source, *options, "--model-dir", checkpoints["lstm"], "--out", out)
    assert code == 2
    assert capsys.readouterr().err == f"rnn-sentiment: {tmp_path}/{message}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == [name]  # no output, no leftovers


def test_a_missing_model_dir_or_input_is_one_line(tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("good\n")
    missing = tmp_path / "no-model"
    assert_one_line_error(
        rnn_sentiment("predict", str(source), "--model-dir", str(missing)),
        f"cannot load the checkpoint ({missing}: checkpoint directory does not exist)",
        "--model-dir",
    )
    assert_one_line_error(
        rnn_sentiment("predict", str(tmp_path / "nothing.txt")),
        "nothing.txt: no such file (give a file to score, or - for stdin)",
    )
    assert_one_line_error(
        rnn_sentiment("predict", str(tmp_path)),
        f"{tmp_path}: not a file (give a file to score, or - for stdin)",
    )


def test_the_progress_bar_is_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tqdm")

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress() as advance:
        advance(1024)
        advance(3)
    assert "1027 texts" in terminal.getvalue()

    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    with _progress() as advance:
        advance(1024)
    assert pipe.getvalue() == ""
