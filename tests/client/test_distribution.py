"""The client is a distribution of its own: it installs, imports and runs without the server.

`pip install ./clients/python` into a fresh virtual environment must bring httpx and pydantic
(and what they need) but neither torch nor FastAPI; the package and its command line must then
work there. In the project's own environment, where torch is installed, importing the package
and printing its help must still not import it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = REPO / "clients" / "python"
SERVER_SIDE = ("torch", "fastapi", "starlette", "uvicorn", "app", "training")

# Imports the package, prints the CLI's help, then which server-side modules got imported.
PROBE = f"""
import json, sys
import rnn_sentiment_client
from rnn_sentiment_client.cli import main
status = main(["--help"])
print(json.dumps({{
    "status": status,
    "file": rnn_sentiment_client.__file__,
    "version": rnn_sentiment_client.__version__,
    "imported": sorted(m for m in {SERVER_SIDE!r} if m in sys.modules),
}}))
"""


def probe(python: Path | str, cwd: Path) -> dict[str, object]:
    result = subprocess.run(
        [str(python), "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.startswith("usage: rnn-sentiment-client")
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_importing_the_client_and_its_help_import_nothing_of_the_server(tmp_path: Path) -> None:
    report = probe(sys.executable, tmp_path)
    assert report["status"] == 0
    assert report["imported"] == []


def clean_env() -> dict[str, str]:
    """This environment without the project's virtualenv or path settings (pip's own
    configuration, e.g. a package index mirror, stays)."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv(tmp_path: Path) -> None:
    """About 20 s: a venv with its own pip, then the install (building the wheel)."""
    # A copy, so the build's scratch files (build/, *.egg-info) stay out of the repository.
    source = shutil.copytree(
        DISTRIBUTION,
        tmp_path / "src",
        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
    )
    venv = tmp_path / "venv"
    env = clean_env()
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=env, timeout=120)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", source],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"rnn-sentiment-client", "httpx", "pydantic"} <= installed
    assert not installed & {"torch", "fastapi", "starlette", "uvicorn", "rnn-sentiment"}

    report = probe(python, tmp_path)
    assert report["status"] == 0
    assert report["imported"] == []
    assert report["version"] == "0.1.0"
    assert str(report["file"]).startswith(str(venv))
    assert (Path(str(report["file"])).parent / "py.typed").is_file()

    for command in ([bin_dir / "rnn-sentiment-client"], [python, "-m", "rnn_sentiment_client"]):
        result = subprocess.run(
            [*command, "--help"], capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "{predict,stream,tokenize,explain,model,models,ready}" in result.stdout
