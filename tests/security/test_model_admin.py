"""Loading and unloading models on a real `python -m app` serving a store of models.

Checkpoints are written into the store while the server runs (as `make train MODEL_NAME=x`
writes `model_store/x`), then loaded with POST /admin/models/{name} and unloaded with DELETE,
while client threads keep asking the other models: none of their requests may fail. Hostile
names go over a raw socket, exactly as sent (no client normalises `..` or re-encodes them).
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.app.test_server import free_port, running, server_env, wait_ready
from tests.conftest import build_checkpoint

pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-key-for-model-admin-tests-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEXT = "What a wonderful film"


@dataclass
class StoreServer:
    base_url: str
    port: int
    store: Path
    log: Path


@pytest.fixture
def store(tmp_path: Path, checkpoints: dict[str, Path]) -> Path:
    """`default` (LSTM) and `tweets` (GRU)."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copytree(checkpoints["lstm"], root / "default")
    shutil.copytree(checkpoints["gru"], root / "tweets")
    return root


@pytest.fixture
def serve_store(store: Path, tmp_path: Path) -> Iterator[Callable[..., StoreServer]]:
    """`serve_store(**env)`: a ready server on the store (stopped after)."""
    with ExitStack() as stack:

        def start(**env: str) -> StoreServer:
            port = free_port()
            environment = server_env(store, port, APP_ADMIN_KEYS=ADMIN_KEY, **env)
            del environment["APP_MODEL_DIR"]
            environment["APP_MODEL_STORE"] = str(store)
            log = tmp_path / f"server-{port}.log"
            process = stack.enter_context(running([sys.executable, "-m", "app"], environment, log))
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(base_url, process, log)
            return StoreServer(base_url, port, store, log)

        yield start


@dataclass
class Traffic:
    """Client threads asking given models over and over; every non-200 is a failure."""

    base_url: str
    models: tuple[str | None, ...]
    failures: list[str] = field(default_factory=list)
    answered: Counter[str] = field(default_factory=Counter)
    halt: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Traffic:
        self.threads = [
            threading.Thread(target=self._ask, args=(model,), daemon=True) for model in self.models
        ]
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def _ask(self, model: str | None) -> None:
        body: dict[str, object] = {"texts": [TEXT, "awful service", "fine"]}
        if model is not None:
            body["model"] = model
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.halt.is_set():
                try:
                    response = client.post("/predict", json=body)
                except httpx.HTTPError as error:
                    self._fail(f"{model}: {type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    self._fail(f"{model}: {response.status_code} {response.text}")
                    continue
                with self.lock:
                    self.answered[response.json()["model"]["name"]] += 1

    def _fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)


def raw_request(port: int, method: str, target: bytes) -> int:
    """Send `target` byte for byte; the status code of the answer."""
    request = (
        method.encode()
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\n".encode()
        + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert match, answer[:200]
    return int(match.group(1))


def test_models_come_and_go_while_the_others_serve_without_a_failure(
    serve_store: Callable[..., StoreServer],
) -> None:
    server = serve_store(APP_ACCESS_LOG="false")
    build_checkpoint(server.store / "reviews", "gru", seed=9)  # trained in while serving
    operations: list[tuple[str, int]] = []
    with (
        httpx.Client(base_url=server.base_url, timeout=60, headers=ADMIN) as admin,
        Traffic(server.base_url, (None, "tweets", None, "default", "tweets")) as traffic,
    ):
        time.sleep(0.3)
        for _ in range(4):
            loaded = admin.post("/admin/models/reviews")
            operations.append(("load", loaded.status_code))
            served = admin.post("/predict", json={"text": TEXT, "model": "reviews"})
            operations.append(("predict", served.status_code))
            unloaded = admin.delete("/admin/models/reviews")
            operations.append(("unload", unloaded.status_code))
            gone = admin.post("/predict", json={"text": TEXT, "model": "reviews"})
            operations.append(("gone", gone.status_code))
        time.sleep(0.3)
    assert traffic.failures == []
    assert operations == [("load", 201), ("predict", 200), ("unload", 200), ("gone", 404)] * 4
    assert traffic.answered["default"] > 20
    assert traffic.answered["tweets"] > 20
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert (
        'rnn_sentiment_model_operations_total{model="reviews",operation="load",outcome="done"} 4.0'
        in metrics
    )
    assert (
        'rnn_sentiment_model_operations_total{model="reviews",operation="unload",'
        'outcome="done"} 4.0' in metrics
    )
    for model in ("default", "tweets", "reviews"):
        assert re.search(
            rf'rnn_sentiment_inference_requests_total\{{kind="predict",model="{model}"\}} \d',
            metrics,
        )
        assert re.search(
            rf'rnn_sentiment_inference_batch_size_count\{{model="{model}"\}} \d', metrics
        )
    assert re.search(
        r'rnn_sentiment_model_info\{name="reviews",version="[0-9a-f]{12}"\} 0\.0', metrics
    )


def test_a_bad_checkpoint_added_at_run_time_is_refused_and_the_rest_serve(
    serve_store: Callable[..., StoreServer],
) -> None:
    server = serve_store()
    build_checkpoint(server.store / "broken", "lstm", seed=4)
    weights = server.store / "broken" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with Traffic(server.base_url, (None, "tweets")) as traffic:
        refused = httpx.post(f"{server.base_url}/admin/models/broken", headers=ADMIN, timeout=60)
        time.sleep(0.3)
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "load_failed"
    assert "sha256 does not match" in refused.json()["error"]["message"]
    assert traffic.failures == []
    models = httpx.get(f"{server.base_url}/models", timeout=10).json()["models"]
    assert [model["name"] for model in models] == ["default", "tweets"]
    assert "load refused" in server.log.read_text()


HOSTILE_TARGETS = [
    b"/admin/models/..",
    b"/admin/models/%2e%2e",
    b"/admin/models/%2E%2E",
    b"/admin/models/..%2F..%2Ftweets",
    b"/admin/models/%2e%2e%2f%2e%2e%2fetc",
    b"/admin/models/.hidden",
    b"/admin/models/tweets%00",
    b"/admin/models/" + b"x" * 65,
    b"/admin/models/" + b"x" * 4000,
    b"/admin/models/r%C3%A9views",
    "/admin/models/réviews".encode(),
    b"/admin/models/%F0%9F%98%80",
    b"/admin/models/%",
]


def test_hostile_names_are_refused_with_a_4xx(
    serve_store: Callable[..., StoreServer], store: Path
) -> None:
    # Checkpoints next to the store, where `..` would lead.
    build_checkpoint(store.parent / "etc", "gru", seed=5)
    build_checkpoint(store.parent / "outside", "gru", seed=5)
    server = serve_store()
    statuses = {
        (method, target): raw_request(server.port, method, target)
        for target in HOSTILE_TARGETS
        for method in ("POST", "DELETE")
    }
    assert {key: status for key, status in statuses.items() if not 400 <= status < 500} == {}
    models = httpx.get(f"{server.base_url}/models", timeout=10).json()["models"]
    assert [model["name"] for model in models] == ["default", "tweets"]
    assert httpx.post(f"{server.base_url}/predict", json={"text": TEXT}).status_code == 200


def test_with_two_workers_a_load_reaches_both(serve_store: Callable[..., StoreServer]) -> None:
    server = serve_store(WORKERS="2", APP_ACCESS_LOG="false")
    build_checkpoint(server.store / "reviews", "lstm", seed=7)
    loaded = httpx.post(f"{server.base_url}/admin/models/reviews", headers=ADMIN, timeout=60)
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["other_workers_signalled"] is True
    version = loaded.json()["model"]["version"]
    # The other worker reloads in the background: wait until fresh connections (spread over
    # both workers by the kernel) all find the model.
    deadline = time.monotonic() + 30
    streak = 0
    while streak < 20 and time.monotonic() < deadline:
        with httpx.Client(base_url=server.base_url, timeout=10) as client:  # a new connection
            answer = client.post("/predict", json={"text": TEXT, "model": "reviews"})
        streak = streak + 1 if answer.status_code == 200 else 0
        if answer.status_code == 200:
            assert answer.json()["model"] == {"name": "reviews", "version": version}
        else:
            assert answer.status_code in (404, 503), answer.text
            time.sleep(0.05)
    assert streak == 20
