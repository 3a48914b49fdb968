"""`python -m app` refuses to start on a placeholder or short credential.

Each case runs the real entry point as a subprocess, with none of the caller's `APP_*`
variables: it must exit with status 2 before loading anything, saying in one plain line which
setting is wrong and never echoing the rejected value.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.app.test_server import server_env

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
# The refusal needs pydantic only; a start that got as far as importing torch and loading a
# checkpoint takes several times as long on a loaded machine.
REFUSED_WITHIN_S = 15.0
VALID_KEY = "9f2c4e7a1b8d3f60a5e2c7b4d1f8a3e6"
PLACEHOLDER = "a placeholder value is not a secret; generate a real one"
SHORT = "each value needs 16 or more characters"

PLACEHOLDERS = [
    pytest.param("APP_API_KEYS", "example-api-key-CHANGE-ME", PLACEHOLDER, id="api-example"),
    pytest.param("APP_API_KEYS", "k7Qm2xR9vT4pL8w", SHORT, id="api-15-chars"),
    pytest.param("APP_ADMIN_KEYS", "ChangeMe-please-0000", PLACEHOLDER, id="admin-changeme"),
    pytest.param(
        "APP_STREAM_SECRET", "an-Example-stream-secret-0123", PLACEHOLDER, id="stream-example"
    ),
    pytest.param("APP_METRICS_KEYS", "changeme-changeme-1", PLACEHOLDER, id="metrics-changeme"),
]


def _run(model_dir: Path, **settings: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = server_env(model_dir, 0, **settings)
    started = time.monotonic()
    result = subprocess.run(
        [str(PYTHON), "-m", "app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, time.monotonic() - started


def _assert_refused(result: subprocess.CompletedProcess[str], settings: dict[str, str]) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # not one log line: logging is configured only after the check
    lines = result.stderr.splitlines()
    assert len(lines) == len(settings), lines
    for line, (name, value) in zip(lines, settings.items(), strict=True):
        assert line.startswith(f"rnn-sentiment: invalid setting {name}: "), line
        assert value not in result.stderr  # the credential itself is never repeated


@pytest.mark.parametrize(("name", "value", "reason"), PLACEHOLDERS)
def test_a_placeholder_or_short_credential_is_refused_before_the_model_loads(
    checkpoints: dict[str, Path], name: str, value: str, reason: str
) -> None:
    result, elapsed = _run(checkpoints["lstm"], **{name: value})
    _assert_refused(result, {name: value})
    assert result.stderr == f"rnn-sentiment: invalid setting {name}: {reason}\n"
    assert elapsed < REFUSED_WITHIN_S


def test_the_check_comes_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    # An empty directory would fail the model load with another status and a log line: the
    # settings error alone shows that nothing was loaded.
    result, _ = _run(tmp_path, APP_API_KEYS="example-api-key-CHANGE-ME")
    _assert_refused(result, {"APP_API_KEYS": "example-api-key-CHANGE-ME"})


def test_every_invalid_setting_gets_its_own_line(checkpoints: dict[str, Path]) -> None:
    bad = {
        "PORT": "70000",
        "APP_API_KEYS": f"{VALID_KEY},example-key-0123456789",
        "APP_ADMIN_KEYS": "ChangeMe-please-0000",
        "APP_STREAM_SECRET": "too-short",
    }
    result, _ = _run(checkpoints["lstm"], **bad)
    _assert_refused(result, bad)
    # The pydantic prefix and the validator's repeat of the name are gone.
    assert "Value error" not in result.stderr
    assert "APP_API_KEYS: APP_API_KEYS" not in result.stderr


def test_real_looking_credentials_pass_the_check(checkpoints: dict[str, Path]) -> None:
    """The same run with valid values gets past validation (stopped here by a bad port)."""
    valid = {
        "APP_API_KEYS": VALID_KEY,
        "APP_ADMIN_KEYS": VALID_KEY[::-1],
        "APP_STREAM_SECRET": VALID_KEY.upper(),
        "APP_METRICS_KEYS": VALID_KEY[8:] + VALID_KEY[:8],
    }
    result, _ = _run(checkpoints["lstm"], PORT="-1", **valid)
    _assert_refused(result, {"PORT": "-1"})
