"""The real thing: `make serve` as a subprocess on a free loopback port, and its failure modes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from training.checkpoint import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[2]
STARTUP_FAILURE = 3  # uvicorn's exit status when the app cannot start

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(model_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",
            "APP_MODEL_DIR": str(model_dir),
            "APP_LOG_FORMAT": "json",
            **extra,
        }
    )
    return env


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """Start `command` in its own process group; stop that group (and only it) afterwards.

    Output goes to `log` (a file, so a chatty server can never block on a full pipe).
    """
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def wait_ready(
    base_url: str, process: subprocess.Popen[str], log: Path, timeout_s: float = 60
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("server did not become ready")


@contextmanager
def uvicorn_server(model_dir: Path, log: Path, **settings: str) -> Iterator[str]:
    """`uvicorn app.main:app` on a free loopback port; yields its base URL once ready."""
    port = free_port()
    env = server_env(model_dir, port, APP_ACCESS_LOG="false", **settings)
    command = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1"]
    with running([*command, "--port", str(port)], env, log) as process:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, process, log)
        yield base_url


def make_serve() -> list[str]:
    # `-o .venv/.runtime`: the test runs inside the installed dev environment, so the install
    # step that `serve` depends on is taken as done; the recipe itself runs as in production.
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    return [make, "--no-print-directory", "-o", ".venv/.runtime", "serve"]


def test_make_serve_answers_over_loopback(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with running(make_serve(), server_env(checkpoints["lstm"], port), log) as process:
        wait_ready(base_url, process, log)
        response = httpx.post(f"{base_url}/predict", json={"text": "I love this film"}, timeout=10)
        assert response.status_code == 200
        assert response.json()["model"]["name"] == "default"
        assert response.headers["x-request-id"]
        error = httpx.post(f"{base_url}/predict", json={"text": " "}, timeout=10)
        assert error.status_code == 422
        too_big = httpx.post(
            f"{base_url}/predict",
            content=b"x" * 2_000_000,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "body_too_large"
        assert "server" not in response.headers  # no version banner
        stop(process)
    output = log.read_text()
    assert '"message":"ready"' in output
    assert '"message":"shutting down"' in output


def test_several_workers_share_the_socket_and_the_metrics(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "app"]
    env = server_env(checkpoints["gru"], port, WORKERS="2", APP_ACCESS_LOG="false")
    log = tmp_path / "server.log"
    with running(command, env, log) as process:
        wait_ready(base_url, process, log)
        for _ in range(20):
            with httpx.Client(base_url=base_url, timeout=10) as client:  # new connections
                assert client.post("/predict", json={"text": "fine"}).status_code == 200
        metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith(
            'rnn_sentiment_http_requests_total{method="POST",route="/predict",status="200"}'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) == 20  # counted across both workers


def test_each_worker_listens_on_its_own_reuseport_socket(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The kernel spreads new connections over the workers' sockets (not one shared socket
    that whichever worker wakes first drains)."""
    psutil = pytest.importorskip("psutil")
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell sockets apart")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(checkpoints["gru"], port, WORKERS="2", APP_ACCESS_LOG="false")
    log = tmp_path / "server.log"
    with running([sys.executable, "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        sockets: dict[int, str] = {}  # pid -> the listening socket's inode
        deadline = time.monotonic() + 30
        while len(sockets) < 2 and time.monotonic() < deadline:
            for child in psutil.Process(process.pid).children(recursive=True):
                for conn in child.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                        sockets[child.pid] = str(Path(f"/proc/{child.pid}/fd/{conn.fd}").readlink())
            time.sleep(0.1)
    assert len(sockets) == 2  # two workers listening...
    assert len(set(sockets.values())) == 2  # ...on two sockets, not one shared socket
    assert process.pid not in sockets  # the supervisor accepts nothing itself


def corrupt_copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    weights = target / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    return target


def run_app(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_altered_checkpoint_is_refused_in_one_line_before_serving(
    checkpoints: dict[str, Path], tmp_path: Path, workers: str
) -> None:
    broken = corrupt_copy(checkpoints["rnn"], tmp_path / "broken")
    result = run_app(server_env(broken, free_port(), WORKERS=workers))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"rnn-sentiment: cannot serve the checkpoint in {broken}: {broken / WEIGHTS_FILE}: "
        "sha256 does not match manifest.json (file was altered)"
    ]


def incompatible_copy(source: Path, target: Path) -> Path:
    """A copy whose config.json is of another format version, re-pinned in its manifest: it
    passes the manifest check and only loading it fails."""
    shutil.copytree(source, target)
    config = json.loads((target / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (target / CONFIG_FILE).write_text(json.dumps(config))
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    data = (target / CONFIG_FILE).read_bytes()
    manifest["files"][CONFIG_FILE] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
    }
    (target / MANIFEST_FILE).write_text(json.dumps(manifest))
    return target


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_checkpoint_the_app_cannot_load_ends_in_one_plain_line(
    checkpoints: dict[str, Path], tmp_path: Path, workers: str
) -> None:
    broken = incompatible_copy(checkpoints["rnn"], tmp_path / "future")
    result = run_app(server_env(broken, free_port(), WORKERS=workers))
    assert result.returncode == STARTUP_FAILURE, result.stderr
    lines = result.stderr.splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    reason = f"{broken / CONFIG_FILE}: format version 99, expected 1"
    # Once, last, however many workers failed; the log has it too, without a traceback.
    assert plain == [f"rnn-sentiment: cannot serve the checkpoint in {broken}: {reason}"]
    assert lines[-1] == plain[0]
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    messages = [entry["message"] for entry in logged if entry["logger"] == "app.main"]
    assert f"cannot serve: the model failed to load: {reason}" in messages
    assert "Traceback" not in result.stderr


def test_a_missing_checkpoint_is_refused_before_anything_loads(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_app(server_env(missing, free_port()))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"rnn-sentiment: the model directory {missing} does not exist; set APP_MODEL_DIR= "
        "(or --model-dir) to a checkpoint directory (`rnn-sentiment train --out DIR` writes one)"
    ]


def test_invalid_settings_exit_before_serving(checkpoints: dict[str, Path]) -> None:
    env = server_env(checkpoints["rnn"], free_port(), APP_MAX_TOKENS="-5")
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "APP_MAX_TOKENS" in result.stderr
