"""`rnn-sentiment client` hands over to the client distribution's command line, against a real
server; without that distribution it says how to install it, in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import REPO, assert_one_line_error, clean_env, free_port, rnn_sentiment


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rnn-sentiment serve` on a free loopback port with the tiny LSTM; its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("client") / "server.log"
    command = [
        sys.executable, "-m", "rnn_sentiment", "serve", "--port", str(port),
        "--model-dir", str(checkpoints["lstm"]),
    ]  # fmt: skip
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=REPO, env=clean_env(), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            else:
                pytest.fail(f"the server did not become ready:\n{log.read_text()}")
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.slow
def test_client_predict_answers_as_the_service(server: str) -> None:
    pytest.importorskip("rnn_sentiment_client")
    text = "I love this film, it is great and wonderful :)"
    result = rnn_sentiment("client", "--url", server, "--json", "predict", text)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    answer = json.loads(line)
    direct = httpx.post(f"{server}/predict", json={"text": text}).json()
    assert answer["text"] == text
    assert (answer["label"], answer["probabilities"]) == (
        direct["label"],
        direct["probabilities"],
    )


@pytest.mark.slow
def test_client_reads_the_url_from_the_environment(server: str) -> None:
    pytest.importorskip("rnn_sentiment_client")
    result = rnn_sentiment("client", "ready", env=clean_env(RNN_SENTIMENT_URL=server))
    assert result.returncode == 0, result.stderr


def test_without_the_client_distribution_it_says_how_to_install_it() -> None:
    # The import system treats a None entry in sys.modules as a package that is not there.
    probe = (
        "import sys\n"
        "sys.modules['rnn_sentiment_client'] = None\n"
        "from rnn_sentiment.cli import main\n"
        "sys.exit(main(['client', 'predict', 'good']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = assert_one_line_error(result)
    assert line == (
        "rnn-sentiment: the client is not installed: pip install ./clients/python "
        "(or make install-client)"
    )
