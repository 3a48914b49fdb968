"""Helpers for the command-line tests: running `rnn-sentiment` and judging its one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def rnn_sentiment(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`rnn-sentiment ARGS` as a subprocess (`python -m rnn_sentiment`, the same `main`)."""
    return subprocess.run(
        [sys.executable, "-m", "rnn_sentiment", *args],
        cwd=REPO,
        input=stdin,
        env=clean_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the service's settings, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    for name in ("HOST", "PORT", "WORKERS", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    env.update(extra)
    return env


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The run failed as an expected mistake: status 2, one line on stderr, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("rnn-sentiment: "), line
    for fragment in fragments:
        assert fragment in line
    return line


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
