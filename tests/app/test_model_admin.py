"""Loading and unloading models at run time: POST and DELETE /admin/models/{name}.

The app runs in process with its lifespan; checkpoints are real tiny ones (tests/conftest.py),
written into the store while the service runs, as `make train MODEL_NAME=x` writes
`model_store/x`. Each test checks what a client sees (status, error code, which model answers)
and what the store and the metrics say afterwards.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.core.errors import ApiError
from app.core.metrics import Metrics
from app.inference.store import ModelStore
from app.streaming.codec import stream_secret
from app.streaming.service import streams_factory
from tests.app.conftest import serve_app
from tests.conftest import build_checkpoint

pytestmark = pytest.mark.anyio

ADMIN_KEY = "admin-key-for-model-admin-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEXT = "the food was great but the service was slow"


def settings_for(store: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"model_store": store, "gc_freeze": False, "admin_keys": ADMIN_KEY}
    return Settings(**(values | overrides))


@pytest.fixture
def store(tmp_path: Path, checkpoints: dict[str, Path]) -> Path:
    """A store of two models: `default` (LSTM) and `tweets` (GRU)."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copytree(checkpoints["lstm"], root / "default")
    shutil.copytree(checkpoints["gru"], root / "tweets")
    return root


async def predict(client: httpx.AsyncClient, model: str | None = None) -> httpx.Response:
    return await client.post("/predict", json={"text": TEXT} | ({"model": model} if model else {}))


async def names(client: httpx.AsyncClient) -> list[str]:
    return [model["name"] for model in (await client.get("/models")).json()["models"]]


async def test_a_checkpoint_trained_into_the_store_is_served_once_loaded(store: Path) -> None:
    async with serve_app(settings_for(store)) as client:
        before = await predict(client, "reviews")
        build_checkpoint(store / "reviews", "lstm", seed=7)  # what `make train` leaves there
        loaded = await client.post("/admin/models/reviews", headers=ADMIN)
        answer = await predict(client, "reviews")
        listed = (await client.get("/models/reviews")).json()
        again = await client.post("/admin/models/reviews", headers=ADMIN)
        default = await predict(client)
    assert before.status_code == 404
    assert before.json()["error"]["code"] == "model_not_found"
    assert loaded.status_code == 201, loaded.text
    body = loaded.json()
    assert body["status"] == "loaded"
    assert body["model"]["name"] == "reviews"
    assert re.fullmatch(r"[0-9a-f]{12}", body["model"]["version"])
    assert body["seconds"] > 0
    assert body["other_workers_signalled"] is False  # one process, no arbiter
    assert answer.status_code == 200
    assert answer.json()["model"] == body["model"]
    # Other weights than the default's, so other probabilities: really the new checkpoint.
    assert answer.json()["probabilities"] != default.json()["probabilities"]
    assert listed["status"] == "ready"
    assert listed["version"] == body["model"]["version"]
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "model_already_loaded"
    assert "/admin/reload?model=reviews" in again.json()["error"]["message"]


async def test_unload_stops_serving_a_model_and_keeps_the_rest(store: Path) -> None:
    async with serve_app(settings_for(store)) as client:
        version = (await predict(client, "tweets")).json()["model"]["version"]
        unloaded = await client.delete("/admin/models/tweets", headers=ADMIN)
        gone = await predict(client, "tweets")
        listed = await names(client)
        ready = (await client.get("/readyz")).json()["models"]
        default = await predict(client)
        twice = await client.delete("/admin/models/tweets", headers=ADMIN)
        # A reload of every model does not bring an unloaded one back; a load does.
        reloaded = await client.post("/admin/reload", headers=ADMIN)
        after_reload = await names(client)
        back = await client.post("/admin/models/tweets", headers=ADMIN)
        served_again = await predict(client, "tweets")
        metrics = (await client.get("/metrics")).text
    assert unloaded.status_code == 200, unloaded.text
    assert unloaded.json() == {"status": "unloaded", "name": "tweets", "version": version}
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "model_not_found"
    assert listed == ["default"]
    assert ready == [{"name": "default", "status": "ready"}]
    assert default.status_code == 200
    assert twice.status_code == 404
    assert reloaded.status_code == 200
    assert after_reload == ["default"]
    assert back.status_code == 201
    assert served_again.status_code == 200
    assert served_again.json()["model"] == {"name": "tweets", "version": version}
    assert (
        'rnn_sentiment_model_operations_total{model="tweets",operation="unload",outcome="done"} 1.0'
        in metrics
    )
    assert (
        'rnn_sentiment_model_operations_total{model="tweets",operation="load",outcome="done"} 1.0'
        in metrics
    )
    assert f'rnn_sentiment_model_info{{name="tweets",version="{version}"}} 1.0' in metrics


async def test_the_default_model_cannot_be_unloaded(store: Path) -> None:
    async with serve_app(settings_for(store)) as client:
        refused = await client.delete("/admin/models/default", headers=ADMIN)
        still = await predict(client)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "default_model"
    assert "APP_DEFAULT_MODEL" in error["message"]
    assert still.status_code == 200


@pytest.mark.parametrize("damage", ["flipped byte", "truncated weights", "no weights"])
async def test_a_bad_checkpoint_added_at_run_time_is_refused_and_the_rest_serve(
    store: Path, damage: str
) -> None:
    async with serve_app(settings_for(store)) as client:
        build_checkpoint(store / "broken", "gru", seed=3)
        weights = store / "broken" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        if damage == "flipped byte":
            data[len(data) // 2] ^= 0xFF
            weights.write_bytes(bytes(data))
        elif damage == "truncated weights":
            weights.write_bytes(bytes(data[:-7]))
        else:
            weights.unlink()
        refused = await client.post("/admin/models/broken", headers=ADMIN)
        listed = await names(client)
        named = await predict(client, "broken")
        others = [await predict(client), await predict(client, "tweets")]
        metrics = (await client.get("/metrics")).text
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "load_failed"
    assert "model.safetensors" in error["message"]
    assert "\n" not in error["message"]
    assert listed == ["default", "tweets"]  # nothing half-loaded is left behind
    assert named.status_code == 404
    assert [answer.status_code for answer in others] == [200, 200]
    assert (
        'rnn_sentiment_model_operations_total{model="broken",operation="load",outcome="failed"} 1.0'
        in metrics
    )


async def test_a_model_that_failed_at_start_is_loaded_once_repaired(
    store: Path, checkpoints: dict[str, Path]
) -> None:
    weights = store / "tweets" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    async with serve_app(settings_for(store)) as client:
        failed = (await client.get("/models/tweets")).json()["status"]
        still_broken = await client.post("/admin/models/tweets", headers=ADMIN)
        still_listed = (await client.get("/models/tweets")).json()
        shutil.copy(checkpoints["gru"] / "model.safetensors", weights)
        repaired = await client.post("/admin/models/tweets", headers=ADMIN)
        answer = await predict(client, "tweets")
    assert failed == "failed"
    assert still_broken.status_code == 409
    assert still_broken.json()["error"]["code"] == "load_failed"
    assert still_listed["status"] == "failed"  # listed as before, with the new reason
    assert "model.safetensors" in still_listed["reason"]
    assert repaired.status_code == 201, repaired.text
    assert answer.status_code == 200


async def test_a_folder_the_store_does_not_hold_or_the_settings_exclude(
    store: Path, checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    (store / "empty").mkdir()  # a folder, but not a checkpoint
    async with serve_app(settings_for(store)) as client:
        missing = await client.post("/admin/models/nothing-here", headers=ADMIN)
        empty = await client.post("/admin/models/empty", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "checkpoint_not_found"
    assert empty.status_code == 404
    build_checkpoint(store / "reviews", "lstm", seed=7)
    async with serve_app(settings_for(store, models=("default", "tweets"))) as client:
        not_listed = await client.post("/admin/models/reviews", headers=ADMIN)
    assert not_listed.status_code == 409
    assert "APP_MODELS" in not_listed.json()["error"]["message"]
    single = Settings(model_dir=checkpoints["lstm"], gc_freeze=False, admin_keys=ADMIN_KEY)
    async with serve_app(single) as client:
        one = await client.post("/admin/models/reviews", headers=ADMIN)
    assert one.status_code == 409
    assert "APP_MODEL_DIR" in one.json()["error"]["message"]


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".hidden",
        "..%2F..%2Fetc",
        "a%00b",
        "tweets%0A",
        "-rf",
        "_x",
        "r%C3%A9views",  # "réviews"
        "%F0%9F%98%80",  # an emoji
        "x" * 65,
        "x" * 5000,
    ],
)
async def test_hostile_names_are_refused_with_a_4xx(store: Path, name: str) -> None:
    outside = store.parent / "outside"
    build_checkpoint(outside, "gru", seed=5)  # a checkpoint just outside the store
    async with serve_app(settings_for(store)) as client:
        url = httpx.URL(f"http://testserver/admin/models/{name}")
        loaded = await client.post(url, headers=ADMIN)
        unloaded = await client.delete(url, headers=ADMIN)
        listed = await names(client)
    for response in (loaded, unloaded):
        assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
        assert "error" in response.json()
    assert listed == ["default", "tweets"]


async def test_the_store_checks_names_itself(store: Path) -> None:
    """Defence in depth: the store refuses a name that is not one even when no route
    checked it first."""
    settings = settings_for(store)
    metrics = Metrics()
    models = ModelStore(
        settings, metrics, streams_factory(settings, metrics, stream_secret(settings))
    )
    for name in ("..", "../tweets", "a/b", "", "é", "x" * 65):
        with pytest.raises(ApiError) as refused:
            await models.load(name)
        assert refused.value.status_code == 422
        assert refused.value.code == "invalid_model_name"


async def test_admin_routes_need_the_admin_key(store: Path) -> None:
    async with serve_app(settings_for(store, api_keys="api-key-0123456789abcdef")) as client:
        build_checkpoint(store / "reviews", "lstm", seed=7)
        anonymous = await client.post("/admin/models/reviews")
        api_key = await client.post(
            "/admin/models/reviews", headers={"Authorization": "Bearer api-key-0123456789abcdef"}
        )
        delete = await client.delete("/admin/models/tweets")
        listed = (await client.get("/readyz")).json()["models"]
    assert [anonymous.status_code, api_key.status_code, delete.status_code] == [401, 401, 401]
    assert [model["name"] for model in listed] == ["default", "tweets"]
    async with serve_app(Settings(model_store=store, gc_freeze=False)) as client:
        assert (await client.post("/admin/models/reviews")).status_code in (404, 405)


async def test_two_loads_of_one_name_load_it_once(store: Path) -> None:
    async with serve_app(settings_for(store)) as client:
        build_checkpoint(store / "reviews", "lstm", seed=7)
        answers = await asyncio.gather(
            *(client.post("/admin/models/reviews", headers=ADMIN) for _ in range(4))
        )
        both = await asyncio.gather(
            client.delete("/admin/models/reviews", headers=ADMIN),
            client.delete("/admin/models/reviews", headers=ADMIN),
        )
        listed = await names(client)
    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {201: 1, 409: 3}
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {
        "model_already_loaded"
    }
    assert sorted(answer.status_code for answer in both) == [200, 404]
    assert listed == ["default", "tweets"]


async def test_requests_holding_a_model_finish_on_it_when_it_is_unloaded(store: Path) -> None:
    # Batches wait up to 300 ms to fill, so the requests are still queued when the unload
    # begins: it must wait for them.
    async with serve_app(settings_for(store, max_wait_ms=300)) as client:
        version = (await predict(client, "tweets")).json()["model"]["version"]
        held = [asyncio.create_task(predict(client, "tweets")) for _ in range(5)]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in held)
        unloaded = await client.delete("/admin/models/tweets", headers=ADMIN)
        answers = await asyncio.gather(*held)
        after = await predict(client, "tweets")
    assert unloaded.status_code == 200
    assert [answer.status_code for answer in answers] == [200] * 5
    assert {answer.json()["model"]["version"] for answer in answers} == {version}
    assert after.status_code == 404


async def test_other_models_never_fail_while_models_load_and_unload(store: Path) -> None:
    failures: list[str] = []
    counts: Counter[str] = Counter()
    stop = asyncio.Event()

    async def keep_asking(client: httpx.AsyncClient, model: str | None) -> None:
        while not stop.is_set():
            body: dict[str, Any] = {"texts": [TEXT, "awful", "fine I guess"]}
            response = await client.post(
                "/predict", json=body | ({"model": model} if model else {})
            )
            if response.status_code != 200:
                failures.append(f"{model}: {response.status_code} {response.text}")
            counts[model or "default"] += 1

    async def keep_asking_reviews(client: httpx.AsyncClient) -> None:
        # The model that comes and goes: 200, or 404 while unloaded, or 503 while loading.
        while not stop.is_set():
            response = await predict(client, "reviews")
            if response.status_code not in (200, 404, 503):
                failures.append(f"reviews: {response.status_code} {response.text}")
            await asyncio.sleep(0)

    async with serve_app(settings_for(store)) as client:
        build_checkpoint(store / "reviews", "gru", seed=9)  # added while serving
        askers = [
            asyncio.create_task(keep_asking(client, model))
            for model in (None, "default", "tweets", None, "tweets")
        ]
        askers.append(asyncio.create_task(keep_asking_reviews(client)))
        operations = []
        for _ in range(3):
            operations.append(
                (await client.post("/admin/models/reviews", headers=ADMIN)).status_code
            )
            operations.append(
                (await client.delete("/admin/models/reviews", headers=ADMIN)).status_code
            )
        stop.set()
        await asyncio.gather(*askers)
        metrics = (await client.get("/metrics")).text
    assert operations == [201, 200] * 3
    assert failures == []
    assert counts["default"] > 10
    assert counts["tweets"] > 10
    # Each model's requests counted under its own name.
    for model in ("default", "tweets", "reviews"):
        assert re.search(
            rf'rnn_sentiment_inference_requests_total\{{kind="predict",model="{model}"\}} [1-9]',
            metrics,
        )
        assert re.search(
            rf'rnn_sentiment_inference_batch_size_count\{{model="{model}"\}} [1-9]', metrics
        )
    assert (
        'rnn_sentiment_model_operations_total{model="reviews",operation="unload",'
        'outcome="done"} 3.0' in metrics
    )
    assert 'rnn_sentiment_inference_queue_depth{model="reviews"} 0.0' in metrics


async def test_a_reload_of_every_model_loads_the_folders_new_to_the_store(store: Path) -> None:
    """What the other workers do when a load signals them (WORKERS > 1), and SIGHUP."""
    async with serve_app(settings_for(store)) as client:
        build_checkpoint(store / "reviews", "lstm", seed=7)
        reloaded = await client.post("/admin/reload", headers=ADMIN)
        answer = await predict(client, "reviews")
        hostile = await client.post("/admin/reload", params={"model": "../x"}, headers=ADMIN)
    assert reloaded.status_code == 200, reloaded.text
    outcomes = {model["name"]: model["status"] for model in reloaded.json()["models"]}
    assert outcomes == {"default": "unchanged", "tweets": "unchanged", "reviews": "reloaded"}
    assert answer.status_code == 200
    assert hostile.status_code == 422
    async with serve_app(settings_for(store, models=("default", "tweets"))) as client:
        build_checkpoint(store / "more", "gru", seed=8)
        await client.post("/admin/reload", headers=ADMIN)
        fixed = await names(client)
    assert fixed == ["default", "tweets"]  # APP_MODELS fixes the list
