"""Every command's help, as a person would ask for it: it prints, exits 0, starts nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import REPO, clean_env, rnn_sentiment

COMMANDS = ("serve", "train", "evaluate", "compare", "predict", "client")
FLAG_VARIABLES = ("HOST", "PORT", "WORKERS", "APP_MODEL_DIR", "APP_LOG_LEVEL", "APP_LOG_FORMAT")


def test_the_top_level_help_lists_every_command() -> None:
    result = rnn_sentiment("--help")
    assert result.returncode == 0, result.stderr
    for command in COMMANDS:
        assert f"\n  {command} " in result.stdout
    assert "rnn-sentiment COMMAND --help" in result.stdout


def test_the_top_level_help_imports_neither_torch_nor_the_service() -> None:
    probe = (
        "import sys\n"
        "from rnn_sentiment.cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(name for name in ('torch', 'app', 'training') if name in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[]"


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("rnn-sentiment")
    if not script.exists():
        pytest.skip("the project is not installed in this environment (pip install -e .)")
    result = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, check=False, env=clean_env()
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: rnn-sentiment ")


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (
            "serve",
            [
                "--host",
                "HOST",
                "--port",
                "PORT",
                "--workers",
                "WORKERS",
                "--model-dir",
                "APP_MODEL_DIR",
                "--log-level",
                "APP_LOG_LEVEL",
                "--log-format",
                "APP_LOG_FORMAT",
                "default: 127.0.0.1",
                "default: 8000",
            ],
        ),
        ("train", ["--out", "--force", "--config", "--data", "--cell", "--epochs"]),
        ("evaluate", ["--model", "--data", "--json"]),
        ("compare", ["--cells", "--seeds", "--out"]),
        ("predict", ["--format", "{lines,csv,jsonl}", "--text-field", "--out", "--model-dir"]),
        ("client", ["--url", "--api-key", "predict", "stream", "tokenize", "explain"]),
    ],
)
def test_each_command_has_its_own_help(command: str, expected: list[str]) -> None:
    if command == "client":
        pytest.importorskip("rnn_sentiment_client")
    result = rnn_sentiment(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: rnn-sentiment {command} ")
    words = " ".join(result.stdout.split())  # argparse wraps the help to the terminal
    for text in expected:
        assert text in words, text
    assert result.stderr == ""


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_python_m_app_help_prints_the_serve_help_and_starts_nothing(flag: str) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "app", flag],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m app ")
    words = " ".join(result.stdout.split())  # argparse wraps the help to the terminal
    for variable in FLAG_VARIABLES:
        assert f"sets {variable};" in words
    assert result.stderr == ""  # no server log: nothing was started
    assert time.monotonic() - started < 30


def test_python_m_training_help_lists_its_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m training ")
    for command in ("train", "evaluate", "compare"):
        assert command in result.stdout


def test_a_missing_or_unknown_command_is_a_usage_error() -> None:
    missing = rnn_sentiment()
    assert missing.returncode == 2
    assert "a command is required: one of serve, train" in missing.stderr
    unknown = rnn_sentiment("fit")
    assert unknown.returncode == 2
    assert "invalid choice: 'fit'" in unknown.stderr
