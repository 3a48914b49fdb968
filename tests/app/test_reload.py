"""Hot swap (app.inference.slot): POST /admin/reload and SIGHUP serve a new checkpoint in place.

In-process tests here; the same through real server processes (one worker, and a gunicorn
arbiter with two) at the end of the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.core.metrics import Metrics
from app.inference.slot import ModelSlot, ReloadError
from app.streaming.codec import stream_secret
from app.streaming.service import streams_factory
from tests.app.conftest import ServeFactory
from tests.app.stream.conftest import started, websocket
from tests.app.test_server import corrupt_copy, free_port, running, server_env, wait_ready
from training.checkpoint import load_checkpoint

pytestmark = pytest.mark.anyio

ADMIN_KEY = "admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEXTS = ["What a wonderful film", "Terrible service, never again", "It arrived on Monday"]


def version_of(directory: Path) -> str:
    return load_checkpoint(directory).version


def point(link: Path, target: Path) -> None:
    """Flip the symlink `link` to `target` atomically, as an operator deploying a model would."""
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)


@pytest.fixture
def model_link(checkpoints: dict[str, Path], tmp_path: Path) -> Path:
    link = tmp_path / "current"
    link.symlink_to(checkpoints["lstm"])
    return link


async def test_reload_is_refused_without_the_admin_key(
    serve: ServeFactory, model_link: Path
) -> None:
    async with serve(
        model_dir=model_link, admin_keys=ADMIN_KEY, api_keys="api-key-0123456789"
    ) as client:
        for headers in ({}, {"Authorization": "Bearer api-key-0123456789"}, {"Authorization": "x"}):
            response = await client.post("/admin/reload", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
        assert (await client.post("/admin/reload", headers=ADMIN)).status_code == 200
        operation = (await client.get("/openapi.json")).json()["paths"]["/admin/reload"]["post"]
        assert operation["security"] == [{"AdminKey": []}]
        for status in ("401", "409"):
            example = operation["responses"][status]["content"]["application/json"]["example"]
            assert example["error"]["code"] in {"unauthorized", "reload_failed"}


async def test_without_admin_keys_there_is_no_admin_route(
    serve: ServeFactory, model_link: Path
) -> None:
    async with serve(model_dir=model_link) as client:
        response = await client.post("/admin/reload", headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert "/admin/reload" not in (await client.get("/openapi.json")).json()["paths"]


async def test_reload_serves_the_new_checkpoint_and_says_what_changed(
    serve: ServeFactory, model_link: Path, checkpoints: dict[str, Path]
) -> None:
    lstm, gru = version_of(checkpoints["lstm"]), version_of(checkpoints["gru"])
    async with serve(model_dir=model_link, admin_keys=ADMIN_KEY) as client:
        same = await client.post("/admin/reload", headers=ADMIN)
        assert same.status_code == 200
        assert same.json()["status"] == "unchanged"
        assert same.json()["model"]["version"] == lstm

        point(model_link, checkpoints["gru"])
        response = await client.post("/admin/reload", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "reloaded"
        assert body["previous"] == {"name": "default", "version": lstm}
        assert body["model"] == {"name": "default", "version": gru}
        assert body["seconds"] > 0
        assert body["other_workers_signalled"] is False  # one process, no arbiter

        predicted = (await client.post("/predict", json={"text": "lovely"})).json()
        assert predicted["model"]["version"] == gru
        assert (await client.get("/model")).json()["architecture"]["cell"] == "gru"
        assert (await client.get("/readyz")).json()["model"]["version"] == gru
        traced = await client.post("/hidden-states", json={"text": "lovely", "include_gates": True})
        assert set(traced.json()["layers"][0]["gates"]) == {"reset", "update"}

        metrics = (await client.get("/metrics")).text
        assert (
            'rnn_sentiment_model_reloads_total{model="default",outcome="reloaded"} 1.0' in metrics
        )
        assert (
            'rnn_sentiment_model_reloads_total{model="default",outcome="unchanged"} 1.0' in metrics
        )
        assert f'rnn_sentiment_model_info{{name="default",version="{gru}"}} 1.0' in metrics
        assert f'rnn_sentiment_model_info{{name="default",version="{lstm}"}} 0.0' in metrics


@pytest.mark.parametrize("damage", ["flipped byte", "missing file", "not a checkpoint"])
async def test_a_bad_checkpoint_is_refused_and_the_old_model_keeps_serving(
    serve: ServeFactory,
    model_link: Path,
    checkpoints: dict[str, Path],
    tmp_path: Path,
    damage: str,
) -> None:
    lstm = version_of(checkpoints["lstm"])
    if damage == "flipped byte":
        bad = corrupt_copy(checkpoints["gru"], tmp_path / "bad")
        expected = "model.safetensors: sha256 does not match manifest.json"
    elif damage == "missing file":
        bad = tmp_path / "bad"
        bad.mkdir()
        expected = "does not exist"
    else:
        bad = tmp_path / "bad"
        bad.mkdir()
        (bad / "manifest.json").write_text("{not json")
        expected = "manifest.json"
    target = bad if damage != "missing file" else bad / "nothing-here"
    async with serve(model_dir=model_link, admin_keys=ADMIN_KEY) as client:
        point(model_link, target)
        response = await client.post("/admin/reload", headers=ADMIN)
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "reload_failed"
        assert expected in error["message"]
        answer = await client.post("/predict", json={"text": "still here?"})
        assert answer.status_code == 200
        assert answer.json()["model"]["version"] == lstm
        assert (await client.get("/readyz")).status_code == 200
        assert (
            'rnn_sentiment_model_reloads_total{model="default",outcome="failed"} 1.0'
            in (await client.get("/metrics")).text
        )


async def test_no_request_fails_while_the_model_is_swapped(
    serve: ServeFactory, model_link: Path, checkpoints: dict[str, Path]
) -> None:
    lstm, gru = version_of(checkpoints["lstm"]), version_of(checkpoints["gru"])
    async with serve(model_dir=model_link, admin_keys=ADMIN_KEY) as client:
        swapped = asyncio.Event()
        versions: Counter[str] = Counter()
        statuses: Counter[int] = Counter()

        async def load(number: int) -> None:
            # Keeps going until the swap is done, and a little beyond it.
            extra = 20
            while extra > 0:
                if swapped.is_set():
                    extra -= 1
                body: dict[str, Any] = (
                    {"texts": TEXTS} if number % 2 else {"text": TEXTS[extra % len(TEXTS)]}
                )
                response = await client.post("/predict", json=body)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["model"]["version"]] += 1

        clients = [asyncio.create_task(load(number)) for number in range(8)]
        await asyncio.sleep(0.2)
        point(model_link, checkpoints["gru"])
        response = await client.post("/admin/reload", headers=ADMIN)
        swapped.set()
        await asyncio.gather(*clients)
        assert response.json()["status"] == "reloaded"
        assert statuses == {200: statuses[200]}, statuses
        assert versions[lstm] > 0
        assert versions[gru] >= 8 * 20  # every request after the swap: the new model


async def test_a_request_keeps_the_model_it_started_with(
    checkpoints: dict[str, Path], model_link: Path
) -> None:
    settings = Settings(model_dir=model_link, gc_freeze=False, request_timeout_s=2.0)
    slot = ModelSlot(
        settings, metrics := Metrics(), streams_factory(settings, metrics, stream_secret(settings))
    )
    first = await slot.start()
    try:
        first.runtime.in_flight += 1  # a request still holds the first model
        point(model_link, checkpoints["gru"])
        outcome = await slot.reload()
        assert outcome.changed
        second = slot.current
        assert second is not None
        assert second.runtime is not first.runtime
        await asyncio.sleep(0.3)
        # Not stopped under the request's feet: it can still predict with it.
        assert first.runtime.ready
        (prediction,) = await first.runtime.predict(["still the first"], field="text")
        assert prediction.label in first.runtime.predictor.labels
        first.runtime.in_flight -= 1  # the request ends: the first model is retired
        for _ in range(100):
            if not first.runtime.ready:
                break
            await asyncio.sleep(0.02)
        assert not first.runtime.ready
        assert second.runtime.ready
    finally:
        await slot.stop()


async def test_reloads_run_one_at_a_time(checkpoints: dict[str, Path], model_link: Path) -> None:
    settings = Settings(model_dir=model_link, gc_freeze=False)
    slot = ModelSlot(
        settings, metrics := Metrics(), streams_factory(settings, metrics, stream_secret(settings))
    )
    await slot.start()
    try:
        point(model_link, checkpoints["rnn"])
        first, second = await asyncio.gather(slot.reload(), slot.reload())
        assert (first.changed, second.changed) == (True, False)
        assert second.current == first.current
    finally:
        await slot.stop()


async def test_reload_before_start_is_an_error(model_link: Path) -> None:
    settings = Settings(model_dir=model_link, gc_freeze=False)
    slot = ModelSlot(
        settings, metrics := Metrics(), streams_factory(settings, metrics, stream_secret(settings))
    )
    with pytest.raises(ReloadError, match="not started"):
        await slot.reload()


async def test_a_stream_from_the_previous_model_is_refused_after_a_reload(
    serve: ServeFactory, model_link: Path, checkpoints: dict[str, Path]
) -> None:
    async with serve(model_dir=model_link, admin_keys=ADMIN_KEY) as client:
        started = (await client.post("/stream", json={"text": "The room was "})).json()
        point(model_link, checkpoints["gru"])
        assert (await client.post("/admin/reload", headers=ADMIN)).json()["status"] == "reloaded"
        response = await client.post("/stream", json={"text": "great", "state": started["state"]})
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "state_model_mismatch"
        fresh = await client.post("/stream", json={"text": "The room was great"})
        assert fresh.status_code == 200


async def test_a_websocket_moves_to_the_new_model_between_messages(
    make_settings: Any, model_link: Path, checkpoints: dict[str, Path]
) -> None:
    gru = version_of(checkpoints["gru"])
    async with started(make_settings, model_dir=model_link, admin_keys=ADMIN_KEY) as (client, app):
        async with websocket(app) as ws:
            await ws.send({"text": "The room was ", "state": None})
            first = await ws.receive_json()
            point(model_link, checkpoints["gru"])
            reloaded = await client.post("/admin/reload", headers=ADMIN)
            assert reloaded.json()["status"] == "reloaded"
            # The next message is answered by the new model: the old model's state is refused.
            await ws.send({"text": "great", "state": first["state"]})
            code, reason, error = await ws.expect_close()
        assert (code, reason) == (1008, "state_model_mismatch")
        assert error is not None
        assert error["error"]["code"] == "state_model_mismatch"
        async with websocket(app) as fresh:
            await fresh.send({"text": "The room was great", "state": None, "final": True})
            assert (await fresh.receive_json())["model"]["version"] == gru


# -- real server processes -----------------------------------------------------------------------


class Load(threading.Thread):
    """One client posting /predict until stopped; records each status and model version."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.halt = threading.Event()
        self.outcomes: list[tuple[float, int, str]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=15) as client:
            number = 0
            while not self.halt.is_set():
                number += 1
                try:
                    response = client.post("/predict", json={"text": TEXTS[number % len(TEXTS)]})
                    version = response.json()["model"]["version"] if response.is_success else ""
                    self.outcomes.append((time.monotonic(), response.status_code, version))
                except httpx.HTTPError as error:
                    self.outcomes.append((time.monotonic(), 0, repr(error)))


def wait_for_version(loads: list[Load], version: str, since: float, timeout_s: float = 60) -> None:
    """Until every client's last 10 answers, all after `since`, came from `version`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        recent = [load.outcomes[-10:] for load in loads]
        if all(
            len(last) == 10 and all(t > since and v == version for t, _, v in last)
            for last in recent
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"not every answer came from {version} within {timeout_s}s")


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "trigger"), [("1", "sighup"), ("2", "route"), ("2", "sighup")])
def test_a_running_server_swaps_models_under_load_without_a_failed_request(
    checkpoints: dict[str, Path], model_link: Path, tmp_path: Path, workers: str, trigger: str
) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(
        model_link, port, WORKERS=workers, APP_ADMIN_KEYS=ADMIN_KEY, APP_ACCESS_LOG="false"
    )
    log = tmp_path / "server.log"
    gru = version_of(checkpoints["gru"])
    with running([sys.executable, "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        loads = [Load(base_url) for _ in range(4)]
        for load in loads:
            load.start()
        time.sleep(1.0)
        point(model_link, checkpoints["gru"])
        swapped_at = time.monotonic()
        if trigger == "route":
            response = httpx.post(f"{base_url}/admin/reload", headers=ADMIN, timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["other_workers_signalled"] is (workers != "1")
        else:
            os.kill(process.pid, signal.SIGHUP)
        wait_for_version(loads, gru, swapped_at)
        # A bad checkpoint next: refused, and the model in place goes on serving.
        point(model_link, corrupt_copy(checkpoints["rnn"], tmp_path / "bad"))
        if trigger == "route":
            refused = httpx.post(f"{base_url}/admin/reload", headers=ADMIN, timeout=60)
            assert refused.status_code == 409
        else:
            os.kill(process.pid, signal.SIGHUP)
        time.sleep(1.5)
        for load in loads:
            load.halt.set()
        for load in loads:
            load.join(timeout=30)
        assert process.poll() is None
    outcomes = [outcome for load in loads for outcome in load.outcomes]
    failed = [outcome for outcome in outcomes if outcome[1] != 200]
    assert not failed, failed[:5]
    assert len(outcomes) > 100
    assert all(v == gru for t, _, v in outcomes if t > swapped_at + 30)
    assert outcomes[-1][2] == gru
    output = log.read_text()
    assert output.count('"message":"reloaded"') == int(workers)
    assert "reload refused, the served model stays" in output


@pytest.mark.slow
def test_sighup_before_the_app_handles_it_does_not_kill_the_server(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    port = free_port()
    env = server_env(checkpoints["lstm"], port)
    log = tmp_path / "server.log"
    with running([sys.executable, "-m", "app"], env, log) as process:
        time.sleep(0.3)  # importing: the lifespan's handler is not installed yet
        os.kill(process.pid, signal.SIGHUP)
        wait_ready(f"http://127.0.0.1:{port}", process, log)
        assert process.poll() is None
