"""A model by name, against `httpx.MockTransport` (no server): `model` is in a request body
exactly when a method was given one, `models()` and `get_model()` read their routes, and a
404 `model_not_found` is a `ModelNotFoundError` that knows the names the service holds."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from rnn_sentiment_client import (
    AsyncSentimentClient,
    ModelNotFoundError,
    ModelsResponse,
    NotFoundError,
    SentimentClient,
    UnavailableError,
)

from tests.client.mock import FAST_RETRY, OK, error, mock_client, scripted

PREDICTION = {key: OK[key] for key in ("label", "score", "probabilities")}
# A /predict prediction: the prediction and its text's signals.
SIGNALLED = {key: value for key, value in OK.items() if key != "model"}


def answer_for(path: str, model: str) -> dict[str, Any]:
    """A valid success body for `path`, saying `model` answered."""
    ref = {"name": model, "version": f"v-{model}"}
    bodies: dict[str, dict[str, Any]] = {
        "/predict": {**SIGNALLED, "model": ref},
        "/hidden-states": {
            "tokens": [],
            "hidden_size": 12,
            "layers": [],
            "steps": [],
            "saturation_threshold": 0.95,
            "prediction": PREDICTION,
            "model": ref,
        },
        "/tokenize": {"tokens": [], "count": 0, "oov_count": 0, "model": ref},
        "/explain": {"tokens": [], "label": "positive", "prediction": PREDICTION, "model": ref},
        "/stream": {
            "state": f"state-{model}",
            "position": 1,
            "token_count": 0,
            "tokens": [],
            "steps": [],
            "pending": [],
            "pending_steps": [],
            "prediction": None,
            "final": False,
            "model": ref,
        },
    }
    return bodies[path]


def echo(seen: list[dict[str, Any]]) -> Callable[[httpx.Request], httpx.Response]:
    """A service that answers every text route as the model the body names (else `default`),
    noting each body it received."""

    def handle(request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content)
        seen.append(body)
        if request.url.path == "/predict" and "texts" in body:
            model = answer_for("/predict", body.get("model", "default"))["model"]
            return httpx.Response(200, json={"predictions": [SIGNALLED], "model": model})
        return httpx.Response(200, json=answer_for(request.url.path, body.get("model", "default")))

    return handle


def named(model: str | None) -> dict[str, Any]:
    """The keyword arguments naming `model`; none at all for None, as a caller who does not
    pass it."""
    return {} if model is None else {"model": model}


# Every client method that sends text, naming `model` (None: not passing it).
SYNC_CALLS: dict[str, Callable[[SentimentClient, str | None], Any]] = {
    "predict": lambda c, model: c.predict("good", **named(model)),
    "predict batch": lambda c, model: c.predict(["good", "bad"], **named(model)),
    "hidden_states": lambda c, model: c.hidden_states("good", top_k=2, **named(model)),
    "tokenize": lambda c, model: c.tokenize("good", **named(model)),
    "explain": lambda c, model: c.explain("good", steps=4, **named(model)),
    "stream_update": lambda c, model: c.stream_update("go", **named(model)),
    "stream": lambda c, model: list(c.stream(["go", "od"], **named(model)))[-1],
}


async def _streamed(client: AsyncSentimentClient, model: str | None) -> Any:
    return [update async for update in client.stream(["go", "od"], **named(model))][-1]


ASYNC_CALLS: dict[str, Callable[[AsyncSentimentClient, str | None], Awaitable[Any]]] = {
    "predict": lambda c, model: c.predict("good", **named(model)),
    "predict batch": lambda c, model: c.predict(["good", "bad"], **named(model)),
    "hidden_states": lambda c, model: c.hidden_states("good", top_k=2, **named(model)),
    "tokenize": lambda c, model: c.tokenize("good", **named(model)),
    "explain": lambda c, model: c.explain("good", steps=4, **named(model)),
    "stream_update": lambda c, model: c.stream_update("go", **named(model)),
    "stream": _streamed,
}


def check_bodies(bodies: list[dict[str, Any]], result: Any, model: str | None) -> None:
    """Every body names `model` (or leaves `model` out when None); the answer says who."""
    assert bodies
    for body in bodies:
        if model is None:
            assert "model" not in body, body
        else:
            assert body["model"] == model, body
    assert result.model.name == (model or "default")


@pytest.mark.parametrize("model", [None, "tweets"])
@pytest.mark.parametrize("method", SYNC_CALLS)
def test_sync_methods_send_model_only_when_given(method: str, model: str | None) -> None:
    seen: list[dict[str, Any]] = []
    with mock_client(echo(seen)) as client:
        result = SYNC_CALLS[method](client, model)
    check_bodies(seen, result, model)


@pytest.mark.anyio
@pytest.mark.parametrize("model", [None, "tweets"])
@pytest.mark.parametrize("method", ASYNC_CALLS)
async def test_async_methods_send_model_only_when_given(method: str, model: str | None) -> None:
    seen: list[dict[str, Any]] = []
    transport = httpx.MockTransport(echo(seen))
    async with AsyncSentimentClient("http://svc", transport=transport, retry=FAST_RETRY) as client:
        result = await ASYNC_CALLS[method](client, model)
    check_bodies(seen, result, model)


def test_every_piece_of_a_stream_goes_to_the_named_model() -> None:
    """A state belongs to the model that made it: the final piece names that model too."""
    seen: list[dict[str, Any]] = []
    with mock_client(echo(seen)) as client:
        updates = list(client.stream(["The fo", "od was ", "great"], model="tweets"))
    assert [body.get("model") for body in seen] == ["tweets"] * 4
    assert [body.get("final", False) for body in seen] == [False, False, False, True]
    assert [body.get("state") for body in seen[1:]] == ["state-tweets"] * 3
    assert len(updates) == 4


SUMMARIES: list[dict[str, Any]] = [
    {
        "name": "default",
        "version": "1f8b67844447",
        "default": True,
        "status": "ready",
        "reason": None,
        "architecture": {
            "cell": "lstm",
            "embedding_dim": 16,
            "hidden_size": 12,
            "num_layers": 2,
            "bidirectional": False,
            "dropout": 0.0,
            "parameters": 4321,
        },
        "labels": ["negative", "neutral", "positive"],
        "metrics": {"test": {"accuracy": 0.8}},
        "memory_bytes": 17284,
    },
    {
        "name": "broken",
        "version": None,
        "default": False,
        "status": "failed",
        "reason": "CheckpointError: weights.safetensors is missing",
    },
]


def test_models_lists_every_model_loaded_or_not() -> None:
    handler, seen = scripted(httpx.Response(200, json={"models": SUMMARIES}))
    with mock_client(handler) as client:
        listed = client.models()
    assert isinstance(listed, ModelsResponse)
    assert (seen[0].method, seen[0].url.path) == ("GET", "/models")
    ready, broken = listed.models
    assert (ready.name, ready.default, ready.status, ready.version) == (
        "default",
        True,
        "ready",
        "1f8b67844447",
    )
    assert ready.architecture is not None
    assert ready.architecture.cell == "lstm"
    assert (broken.version, broken.architecture, broken.labels) == (None, None, None)
    assert broken.reason == "CheckpointError: weights.safetensors is missing"


def test_a_status_the_client_does_not_know_yet_is_read_as_given() -> None:
    """A newer service may add a state: the client reports it rather than failing."""
    unloaded = {"name": "old", "version": None, "default": False, "status": "unloaded"}
    handler, _ = scripted(httpx.Response(200, json={"models": [unloaded]}))
    with mock_client(handler) as client:
        assert client.models().models[0].status == "unloaded"


@pytest.mark.parametrize(
    ("name", "path"),
    [("tweets", "/models/tweets"), ("a b/c?d", "/models/a%20b%2Fc%3Fd")],
)
def test_get_model_asks_for_one_name_as_one_path_segment(name: str, path: str) -> None:
    handler, seen = scripted(httpx.Response(200, json=SUMMARIES[0]))
    with mock_client(handler) as client:
        summary = client.get_model(name)
    assert summary.name == "default"
    assert seen[0].method == "GET"
    assert seen[0].url.raw_path.decode() == path
    assert seen[0].url.query == b""


def not_found(message: str, details: list[dict[str, Any]]) -> httpx.Response:
    body = {
        "error": {"code": "model_not_found", "message": message, "details": details},
        "request_id": "r-7",
    }
    return httpx.Response(404, json=body)


def test_an_unknown_model_is_a_model_not_found_error_with_the_known_names() -> None:
    detail = {
        "loc": ["body", "model"],
        "msg": "known models: default, reviews, tweets",
        "type": "unknown_model",
    }
    response = not_found("No model named 'nope'. Known models: default, reviews, tweets.", [detail])
    handler, seen = scripted(response)
    with mock_client(handler) as client, pytest.raises(ModelNotFoundError) as caught:
        client.predict("good", model="nope")
    error_ = caught.value
    assert isinstance(error_, NotFoundError)
    assert (error_.status_code, error_.code, error_.request_id) == (404, "model_not_found", "r-7")
    assert error_.known == ["default", "reviews", "tweets"]
    assert error_.details[0].loc == ["body", "model"]
    assert len(seen) == 1  # not retried: asking again cannot help


def test_the_known_names_come_from_the_message_when_no_detail_lists_them() -> None:
    handler, _ = scripted(not_found("No model named 'x'. Known models: default, tweets.", []))
    with mock_client(handler) as client, pytest.raises(ModelNotFoundError) as caught:
        client.get_model("x")
    assert caught.value.known == ["default", "tweets"]


def test_a_model_not_found_that_names_none_has_no_known_names() -> None:
    handler, _ = scripted(not_found("No model named 'x'.", []))
    with mock_client(handler) as client, pytest.raises(ModelNotFoundError) as caught:
        client.tokenize("good", model="x")
    assert caught.value.known == []


def test_another_404_is_a_plain_not_found_error() -> None:
    handler, _ = scripted(error(404, "not_found", "Not Found"))
    with mock_client(handler) as client, pytest.raises(NotFoundError) as caught:
        client.models()
    assert not isinstance(caught.value, ModelNotFoundError)


def test_a_model_that_is_not_served_is_unavailable() -> None:
    """503 `model_not_ready` (it failed to load, or is loading) is retried, then raised."""
    refused = error(503, "model_not_ready", "The model 'broken' is not being served.")
    handler, seen = scripted(*[refused] * (FAST_RETRY.retries + 1))
    with mock_client(handler) as client, pytest.raises(UnavailableError) as caught:
        client.predict("good", model="broken")
    assert caught.value.code == "model_not_ready"
    assert len(seen) == FAST_RETRY.retries + 1
