"""Canary and shadow (APP_CANARY, APP_SHADOW): a candidate model earning its promotion.

The app runs in process with its lifespan, over a store of real tiny checkpoints: `twin` is
the default's checkpoint under another name (its labels always agree), `other` has other
weights (on the texts below it labels differently from the default). Every path is run on
the fast /predict path and through FastAPI's route, which must behave alike.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.core.config import Settings
from app.inference.predictor import Predictor
from app.inference.slot import StartupError
from tests.app.conftest import serve_app
from tests.conftest import CORPUS, build_checkpoint

pytestmark = pytest.mark.anyio

TEXTS = [*CORPUS[:6], "the food was great but the service was slow", "awful", "love it"]
CANARY_ROUTES = ("/predict", "/tokenize", "/hidden-states", "/explain")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollout") / "store"
    build_checkpoint(root / "default", "lstm", seed=0)
    build_checkpoint(root / "twin", "lstm", seed=0)  # the same weights: the same labels
    build_checkpoint(root / "other", "lstm", seed=2)  # other weights: other labels
    return root


def settings(store: Path, **overrides: Any) -> Settings:
    return Settings(model_store=store, gc_freeze=False, **overrides)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the /metrics exposition `text` (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def shadow_counts(text: str, model: str) -> dict[str, float]:
    return {
        outcome: metric(
            text, "rnn_sentiment_shadow_predictions_total", model=model, outcome=outcome
        )
        for outcome in ("agree", "disagree", "dropped", "failed")
    }


async def settled(client: httpx.AsyncClient, model: str, total: int) -> dict[str, float]:
    """The shadow's counts once `total` texts are accounted for (the shadow runs after the
    answers, in tasks of its own)."""
    deadline = time.monotonic() + 20
    while True:
        counts = shadow_counts((await client.get("/metrics")).text, model)
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.02)


# --- canary -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_canary_answers_its_fraction_of_the_default_traffic(
    store: Path, fast_path: bool
) -> None:
    async with serve_app(settings(store, canary="other:0.25", fast_path=fast_path)) as client:
        names = [
            (await client.post("/predict", json={"text": TEXTS[i % len(TEXTS)]})).json()["model"][
                "name"
            ]
            for i in range(400)
        ]
        exposition = (await client.get("/metrics")).text
    canaried = names.count("other")
    assert set(names) == {"default", "other"}
    # Binomial(400, 0.25): mean 100, standard deviation 8.7; this band is 4.6 of them wide.
    assert 60 <= canaried <= 140
    assert metric(exposition, "rnn_sentiment_canary_requests_total", model="other") == canaried


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_whole_canary_takes_every_request_that_names_no_model(
    store: Path, fast_path: bool
) -> None:
    async with serve_app(settings(store, canary="other:1", fast_path=fast_path)) as client:
        for path in CANARY_ROUTES:
            answer = await client.post(path, json={"text": TEXTS[0]})
            assert answer.status_code == 200, (path, answer.text)
            assert answer.json()["model"]["name"] == "other", path
            for name in ("default", "twin"):  # a model named is the model that answers
                named = await client.post(path, json={"text": TEXTS[0], "model": name})
                assert named.json()["model"]["name"] == name, (path, name)
        batch = await client.post("/predict", json={"texts": TEXTS})
        # Streams stay with the default: a stream's state belongs to the model that began it.
        first = await client.post("/stream", json={"text": "the food was "})
        second = await client.post(
            "/stream", json={"text": "great", "state": first.json()["state"], "final": True}
        )
    assert batch.json()["model"]["name"] == "other"
    assert len(batch.json()["predictions"]) == len(TEXTS)
    assert first.json()["model"]["name"] == "default"
    assert second.status_code == 200
    assert second.json()["model"]["name"] == "default"


def copy_store(store: Path, root: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(store / name, root / name)
    return root


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_refused_request_is_not_counted_as_the_canary_s(
    store: Path, fast_path: bool
) -> None:
    overrides = {"canary": "other:1", "fast_path": fast_path, "rate_limit_per_minute": 3}
    async with serve_app(settings(store, **overrides)) as client:
        statuses = [
            (await client.post("/predict", json={"text": TEXTS[0]})).status_code for _ in range(6)
        ]
        exposition = (await client.get("/metrics")).text
    assert statuses.count(429) == 3
    assert metric(
        exposition, "rnn_sentiment_canary_requests_total", model="other"
    ) == statuses.count(200)


async def test_a_canary_that_is_not_served_leaves_the_default_answering(
    store: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken = copy_store(store, tmp_path / "store", "default", "other")
    weights = broken / "other" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    async with serve_app(settings(broken, canary="other:1")) as client:
        answers = [await client.post("/predict", json={"text": text}) for text in TEXTS]
        route = await client.post("/tokenize", json={"text": TEXTS[0]})
        listed = (await client.get("/models/other")).json()
    assert listed["status"] == "failed"
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["model"]["name"] for answer in answers} == {"default"}
    assert route.json()["model"]["name"] == "default"
    warned = [r for r in caplog.records if r.name == "app.inference.rollout"]
    assert "not being served" in warned[0].getMessage()


async def test_a_candidate_gone_from_the_store_stops_the_start(store: Path, tmp_path: Path) -> None:
    root = copy_store(store, tmp_path / "store", "default", "other")
    checked = settings(root, canary="other:0.5")  # the folder is there when the settings are read
    shutil.rmtree(root / "other")
    with pytest.raises(StartupError, match=r"APP_CANARY: no model named 'other' is served"):
        async with serve_app(checked):
            pass


# --- shadow -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_shadow_of_the_same_checkpoint_always_agrees(store: Path, fast_path: bool) -> None:
    async with serve_app(settings(store, shadow="twin", fast_path=fast_path)) as client:
        for text in TEXTS:
            answer = await client.post("/predict", json={"text": text})
            assert answer.json()["model"]["name"] == "default"
        await client.post("/predict", json={"texts": TEXTS})
        # A request naming a model is not the default's traffic: not shadowed.
        await client.post("/predict", json={"text": TEXTS[0], "model": "other"})
        counts = await settled(client, "twin", 2 * len(TEXTS))
        exposition = (await client.get("/metrics")).text
    assert counts == {"agree": 2 * len(TEXTS), "disagree": 0, "dropped": 0, "failed": 0}
    assert (
        metric(exposition, "rnn_sentiment_shadow_prediction_duration_seconds_count", model="twin")
        == len(TEXTS) + 1
    )


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_shadow_with_other_weights_disagrees(store: Path, fast_path: bool) -> None:
    async with serve_app(settings(store, shadow="other", fast_path=fast_path)) as client:
        answers = [
            (await client.post("/predict", json={"text": text})).json()["label"] for text in TEXTS
        ]
        own = [
            (await client.post("/predict", json={"text": text, "model": "other"})).json()["label"]
            for text in TEXTS
        ]
        counts = await settled(client, "other", len(TEXTS))
    differ = sum(mine != theirs for mine, theirs in zip(answers, own, strict=True))
    assert differ > 0
    assert counts == {
        "agree": len(TEXTS) - differ,
        "disagree": differ,
        "dropped": 0,
        "failed": 0,
    }


@pytest.fixture
def candidate_hook(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], None]], None]:
    """`hook(action)`: from now on every forward pass of a model served from a folder named
    `slow` calls `action()` first, on the model's inference thread (after start-up, whose
    warm-up and timing run as usual)."""
    actions: list[Callable[[], None]] = []
    forward = Predictor.predict_ids

    def predict_ids(self: Predictor, batch: list[list[int]]) -> Any:
        if actions and self.checkpoint.path.name == "slow":
            actions[0]()
        return forward(self, batch)

    monkeypatch.setattr(Predictor, "predict_ids", predict_ids)
    return actions.append


@pytest.fixture
def slow_store(store: Path, tmp_path: Path) -> Path:
    root = copy_store(store, tmp_path / "store", "default")
    shutil.copytree(store / "twin", root / "slow")
    return root


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_slow_shadow_never_delays_the_caller(
    slow_store: Path, candidate_hook: Callable[[Callable[[], None]], None], fast_path: bool
) -> None:
    overrides = {"shadow": "slow", "fast_path": fast_path, "inference_thread": True}
    async with serve_app(settings(slow_store, **overrides)) as client:
        candidate_hook(lambda: time.sleep(0.6))
        for text in TEXTS[:4]:
            started = time.perf_counter()
            answer = await client.post("/predict", json={"text": text})
            assert answer.status_code == 200
            assert time.perf_counter() - started < 0.3  # the candidate takes 0.6 s a pass
        counts = await settled(client, "slow", 4)
        exposition = (await client.get("/metrics")).text
    assert counts["agree"] == 4
    slow = {"model": "slow"}
    assert metric(exposition, "rnn_sentiment_shadow_prediction_duration_seconds_count", **slow) == 4
    assert (
        metric(
            exposition, "rnn_sentiment_shadow_prediction_duration_seconds_bucket", le="0.5", **slow
        )
        == 0
    )


@pytest.mark.parametrize("fast_path", [True, False])
async def test_a_full_shadow_queue_drops_and_counts_never_fails_the_caller(
    slow_store: Path, candidate_hook: Callable[[Callable[[], None]], None], fast_path: bool
) -> None:
    release = threading.Event()
    overrides = {
        "shadow": "slow",
        "fast_path": fast_path,
        "inference_thread": True,
        "queue_size": 4,
        "max_batch_size": 1,
    }
    async with serve_app(settings(slow_store, **overrides)) as client:
        candidate_hook(lambda: release.wait(20))
        statuses = [
            (await client.post("/predict", json={"text": text})).status_code for text in TEXTS * 2
        ]
        held = shadow_counts((await client.get("/metrics")).text, "slow")
        release.set()
        counts = await settled(client, "slow", len(statuses))
    assert statuses == [200] * len(statuses)
    assert held["dropped"] >= len(statuses) - 4  # a queue of 4 texts, the candidate stuck
    assert counts["dropped"] == held["dropped"]
    assert counts["agree"] + counts["dropped"] == len(statuses)
    assert counts["failed"] == counts["disagree"] == 0


async def test_a_failing_shadow_is_counted_and_the_caller_never_sees_it(
    slow_store: Path, candidate_hook: Callable[[Callable[[], None]], None]
) -> None:
    def broken() -> None:
        raise RuntimeError("the candidate broke")

    async with serve_app(settings(slow_store, shadow="slow")) as client:
        candidate_hook(broken)
        answers = [await client.post("/predict", json={"text": text}) for text in TEXTS]
        counts = await settled(client, "slow", len(TEXTS))
    assert {answer.status_code for answer in answers} == {200}
    assert {answer.json()["model"]["name"] for answer in answers} == {"default"}
    assert counts == {"agree": 0, "disagree": 0, "dropped": 0, "failed": len(TEXTS)}


async def test_canary_and_shadow_cost_nothing_unset(store: Path) -> None:
    async with serve_app(settings(store)) as client:
        await client.post("/predict", json={"text": TEXTS[0]})
        exposition = (await client.get("/metrics")).text
    assert "rnn_sentiment_canary_requests" not in exposition
    assert "rnn_sentiment_shadow_predictions" not in exposition


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("other", "expected NAME:FRACTION"),
        ("other:", "is not a number above 0 and at most 1"),
        ("other:0", "is not a number above 0 and at most 1"),
        ("other:-0.5", "is not a number above 0 and at most 1"),
        ("other:1.5", "is not a number above 0 and at most 1"),
        ("other:nan", "is not a number above 0 and at most 1"),
        ("other:ten", "is not a number above 0 and at most 1"),
        ("../other:0.1", "is not a model name"),
        ("nope:0.1", "no model named 'nope' is served (served: default, other, twin)"),
        ("default:0.1", "names the default model"),
    ],
)
def test_a_bad_canary_is_refused_naming_the_setting(store: Path, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(store, canary=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("canary",)
    assert message in error["msg"]
    assert "APP_CANARY" in error["msg"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a b", "is not a model name"),
        ("nope", "no model named 'nope' is served"),
        ("default", "names the default model"),
    ],
)
def test_a_bad_shadow_is_refused_naming_the_setting(store: Path, value: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        settings(store, shadow=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("shadow",)
    assert message in error["msg"]


def test_candidates_must_be_among_the_models_served(store: Path) -> None:
    with pytest.raises(ValidationError, match=r"no model named 'twin' is served"):
        settings(store, models=("default", "other"), canary="twin:0.5")
    with pytest.raises(ValidationError, match=r"served: default\)"):
        Settings(model_dir=store / "default", shadow="other")
    both = settings(store, canary="other:0.05", shadow="twin")
    assert both.canary_split() == ("other", 0.05)
    assert both.shadow == "twin"
