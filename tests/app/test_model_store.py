"""A store of models: every checkpoint in APP_MODEL_STORE served by name, the default first.

Real tiny checkpoints (tests/conftest.py) copied into a store; the app runs in process with
its lifespan, so each model is loaded, verified and warmed up as in production.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from tests.app.conftest import serve_app
from tests.conftest import build_checkpoint

pytestmark = pytest.mark.anyio

TEXT = "the food was great but the service was slow"


def make_store(root: Path, checkpoints: dict[str, Path], **models: str) -> Path:
    """`name=kind` folders holding copies of the tiny checkpoints."""
    for name, kind in models.items():
        shutil.copytree(checkpoints[kind], root / name)
    return root


def store_settings(store: Path, **overrides: Any) -> Settings:
    return Settings(model_store=store, gc_freeze=False, **overrides)


@pytest.fixture
def store(tmp_path: Path, checkpoints: dict[str, Path]) -> Path:
    root = make_store(tmp_path / "store", checkpoints, default="lstm", tweets="gru")
    build_checkpoint(root / "reviews", "lstm", seed=7)  # same shape as default, other weights
    return root


async def test_every_model_is_listed_default_first(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        listed = (await client.get("/models")).json()["models"]
        ready = (await client.get("/readyz")).json()
    assert [model["name"] for model in listed] == ["default", "reviews", "tweets"]
    assert [model["default"] for model in listed] == [True, False, False]
    assert {model["status"] for model in listed} == {"ready"}
    assert listed[2]["architecture"]["cell"] == "gru"
    assert all(model["memory_bytes"] > 0 for model in listed)
    assert all(model["labels"] == ["negative", "neutral", "positive"] for model in listed)
    assert ready["model"]["name"] == "default"
    assert ready["models"] == [
        {"name": "default", "status": "ready"},
        {"name": "reviews", "status": "ready"},
        {"name": "tweets", "status": "ready"},
    ]


async def test_each_endpoint_answers_with_the_named_model(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        answers = {}
        for name in (None, "default", "reviews", "tweets"):
            body = {"text": TEXT} | ({} if name is None else {"model": name})
            answer = (await client.post("/predict", json=body)).json()
            answers[name] = answer
            assert answer["model"]["name"] == (name or "default")
            for path in ("/hidden-states", "/tokenize", "/explain", "/stream"):
                response = await client.post(path, json=body)
                assert response.status_code == 200, (path, response.text)
                assert response.json()["model"]["name"] == (name or "default")
            named = {} if name is None else {"model": name}
            batch = await client.post("/predict", json={"texts": [TEXT, "awful"]} | named)
            assert batch.status_code == 200
            assert batch.json()["model"]["name"] == (name or "default")
        one = (await client.get("/models/reviews")).json()
    # The same checkpoint by either name; another checkpoint gives other probabilities.
    assert answers[None]["probabilities"] == answers["default"]["probabilities"]
    assert answers["reviews"]["probabilities"] != answers["default"]["probabilities"]
    assert answers["reviews"]["model"]["version"] != answers["default"]["model"]["version"]
    assert one["name"] == "reviews"
    assert one["version"] == answers["reviews"]["model"]["version"]


@pytest.mark.parametrize("path", ["/predict", "/hidden-states", "/tokenize", "/explain", "/stream"])
async def test_an_unknown_model_is_404_naming_the_known_ones(store: Path, path: str) -> None:
    async with serve_app(store_settings(store)) as client:
        response = await client.post(path, json={"text": TEXT, "model": "nope"})
        missing = await client.get("/models/nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "default, reviews, tweets" in error["message"]
    assert error["details"][0]["loc"] == ["body", "model"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_a_stream_stays_with_the_model_that_began_it(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        first = await client.post("/stream", json={"text": "the food was ", "model": "reviews"})
        state = first.json()["state"]
        same = await client.post(
            "/stream", json={"text": "great", "state": state, "model": "reviews"}
        )
        other = await client.post("/stream", json={"text": "great", "state": state})
    assert same.status_code == 200
    assert same.json()["model"]["name"] == "reviews"
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "state_model_mismatch"


async def test_a_broken_model_is_listed_failed_and_the_rest_serve(store: Path) -> None:
    weights = store / "tweets" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    async with serve_app(store_settings(store)) as client:
        listed = {m["name"]: m for m in (await client.get("/models")).json()["models"]}
        refused = await client.post("/predict", json={"text": TEXT, "model": "tweets"})
        served = await client.post("/predict", json={"text": TEXT, "model": "reviews"})
        ready = await client.get("/readyz")
    assert listed["tweets"]["status"] == "failed"
    assert "model.safetensors" in listed["tweets"]["reason"]
    assert listed["tweets"]["version"] is None
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "model_not_ready"
    assert served.status_code == 200
    assert ready.status_code == 200
    assert {"name": "tweets", "status": "failed"} in ready.json()["models"]


async def test_a_broken_default_stops_the_start(store: Path) -> None:
    weights = store / "default" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(Exception, match=r"model\.safetensors"):
        async with serve_app(store_settings(store)):
            pass


async def test_app_models_serves_only_those_listed(store: Path) -> None:
    async with serve_app(store_settings(store, models=("default", "tweets"))) as client:
        listed = (await client.get("/models")).json()["models"]
    assert [model["name"] for model in listed] == ["default", "tweets"]


async def test_another_default_model(store: Path) -> None:
    async with serve_app(store_settings(store, default_model="tweets")) as client:
        answer = (await client.post("/predict", json={"text": TEXT})).json()
        card = (await client.get("/model")).json()
    assert answer["model"]["name"] == "tweets"
    assert card["name"] == "tweets"
    assert card["architecture"]["cell"] == "gru"


async def test_reload_one_model_by_name(store: Path, checkpoints: dict[str, Path]) -> None:
    settings = store_settings(store, admin_keys="admin-key-0123456789abcdef")
    headers = {"Authorization": "Bearer admin-key-0123456789abcdef"}
    async with serve_app(settings) as client:
        before = (await client.get("/models/reviews")).json()["version"]
        shutil.rmtree(store / "reviews")
        build_checkpoint(store / "reviews", "lstm", seed=11)
        reloaded = await client.post("/admin/reload", params={"model": "reviews"}, headers=headers)
        after = (await client.get("/models/reviews")).json()["version"]
        unknown = await client.post("/admin/reload", params={"model": "nope"}, headers=headers)
        every = await client.post("/admin/reload", headers=headers)
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["status"] == "reloaded"
    assert body["previous"]["version"] == before
    assert body["model"] == {"name": "reviews", "version": after}
    assert after != before
    assert unknown.status_code == 404
    assert every.status_code == 200
    assert [m["status"] for m in every.json()["models"]] == ["unchanged"] * 3


def test_settings_refuse_a_store_and_a_dir_together(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        Settings(model_store=tmp_path, model_dir=tmp_path / "x")
    with pytest.raises(ValidationError, match="does not list APP_DEFAULT_MODEL"):
        Settings(models="a,b")
    with pytest.raises(ValidationError, match="not a model name"):
        Settings(models="default,../etc")


def test_model_dir_is_a_store_of_one_named_as_the_default(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "mine", default_model="mine")
    assert settings.model_dirs() == {"mine": tmp_path / "mine"}
