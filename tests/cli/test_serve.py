"""`rnn-sentiment serve`: its flags reach the server, and its start-up mistakes are one line,
said before the model loads."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import REPO, assert_one_line_error, clean_env, free_port, rnn_sentiment
from training.checkpoint import VOCAB_FILE

pytestmark = pytest.mark.slow


def test_flags_set_the_server_and_the_model(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    command = [
        sys.executable, "-m", "rnn_sentiment", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--model-dir", str(checkpoints["gru"]), "--log-format", "text",
    ]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=clean_env(), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                try:
                    model = httpx.get(f"http://127.0.0.1:{port}/model", timeout=1)
                    if model.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail(f"the server did not answer:\n{log.read_text()}")
            assert model.json()["architecture"]["cell"] == "gru"
        finally:
            process.terminate()
            process.wait(timeout=30)
    first = log.read_text().splitlines()[0]
    assert not first.startswith("{")  # --log-format text


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "SO_REUSEPORT"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_busy_port_is_one_line_naming_port(
    checkpoints: dict[str, Path], reuse_port: bool, workers: str
) -> None:
    # Held by this process, listening: as another server would. With SO_REUSEPORT too, as
    # another multi-worker server of the same user holds it: a server binding with
    # SO_REUSEPORT itself would silently share it.
    with socket.socket() as holder:
        if reuse_port:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = rnn_sentiment(
            "serve", "--port", str(port), "--workers", workers,
            "--model-dir", str(checkpoints["lstm"]),
        )  # fmt: skip
    line = assert_one_line_error(result)
    assert line == (
        f"rnn-sentiment: port {port} on 127.0.0.1 is in use; set PORT= (or --port) to another"
    )


def test_the_port_variable_is_checked_as_the_flag(checkpoints: dict[str, Path]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            env=clean_env(PORT=str(port), APP_MODEL_DIR=str(checkpoints["lstm"])),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert_one_line_error(result, f"port {port} on 127.0.0.1 is in use; set PORT=")


def test_a_missing_model_dir_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "model"
    line = assert_one_line_error(rnn_sentiment("serve", "--model-dir", str(missing)))
    assert line == (
        f"rnn-sentiment: the model directory {missing} does not exist; set APP_MODEL_DIR= "
        "(or --model-dir) to a checkpoint directory (`rnn-sentiment train --out DIR` writes one)"
    )


def test_an_incomplete_model_dir_is_one_line(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    partial = Path(shutil.copytree(checkpoints["lstm"], tmp_path / "partial"))
    (partial / VOCAB_FILE).unlink()
    assert_one_line_error(
        rnn_sentiment("serve", "--model-dir", str(partial), "--port", str(free_port())),
        f"the model directory {partial} is not a complete checkpoint (missing {VOCAB_FILE})",
        "set APP_MODEL_DIR=",
    )


def test_a_model_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(b"")
    assert_one_line_error(
        rnn_sentiment("serve", "--model-dir", str(file)),
        f"the model directory {file} is not a directory",
    )


def test_an_invalid_flag_value_names_the_flag(checkpoints: dict[str, Path]) -> None:
    assert_one_line_error(
        rnn_sentiment("serve", "--workers", "0", "--model-dir", str(checkpoints["lstm"])),
        "invalid setting WORKERS (from --workers):",
    )
