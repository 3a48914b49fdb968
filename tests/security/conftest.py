"""The hostile-client suite: every attack replayed against a real `python -m app` process.

`start_server(**env)` starts the service on a free loopback port with the tiny LSTM checkpoint
and the given `APP_*` settings, waits until it is ready, and stops it when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app.test_server import free_port, running, server_env, wait_ready

pytestmark = pytest.mark.slow

# Keys long and random-looking enough for the placeholder check.
API_KEY = "k3y-for-hostile-tests-0123456789"
OTHER_KEY = "an0ther-hostile-test-key-987654"


@dataclass
class Server:
    base_url: str
    port: int
    log: Path

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1)


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(
    checkpoints: dict[str, Path], tmp_path: pytest.TempPathFactory
) -> Iterator[StartServer]:
    """`start_server(APP_X="...", ...)`: a ready server with those settings (stopped after)."""
    with ExitStack() as stack:

        def start(kind: str = "lstm", **env: str) -> Server:
            port = free_port()
            base_url = f"http://127.0.0.1:{port}"
            log = Path(str(tmp_path)) / f"server-{port}.log"
            process = stack.enter_context(
                running(
                    [".venv/bin/python", "-m", "app"],
                    server_env(checkpoints[kind], port, **env),
                    log,
                )
            )
            wait_ready(base_url, process, log)
            return Server(base_url, port, log)

        yield start
