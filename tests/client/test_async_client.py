"""The async client against the app in process (httpx's ASGI transport, real lifespan)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from rnn_sentiment_client import AsyncSentimentClient, InvalidRequestError, StreamStateError

from app.main import create_app

SECRET = "client-tests-stream-secret"
TEXT = "The food was great but the service was painfully slow :("


@pytest.fixture
async def async_client(make_settings: Any) -> AsyncIterator[AsyncSentimentClient]:
    # Streams are compared with /predict to float32's precision (tests/app/stream/).
    app = create_app(make_settings("lstm", stream_secret=SECRET, inference_dtype="float32"))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with AsyncSentimentClient("http://testserver", transport=transport) as client:
            yield client


@pytest.mark.anyio
async def test_async_client_methods(async_client: AsyncSentimentClient) -> None:
    assert await async_client.ready()
    ready = await async_client.wait_ready(timeout_s=5)
    single = await async_client.predict(TEXT)
    assert ready.model == single.model
    batch = await async_client.predict([TEXT, "ok"])
    assert batch.predictions[0].probabilities == single.probabilities
    states = await async_client.hidden_states(TEXT, layers="all", include_gates=True, top_k=3)
    assert len(states.layers) == 2
    assert states.layers[0].gates is not None
    assert states.layers[0].units is not None
    assert len(states.layers[0].units) == 3
    tokens = await async_client.tokenize(TEXT)
    assert [token.text for token in tokens.tokens] == [token.text for token in states.tokens]
    explanation = await async_client.explain(TEXT, methods=["occlusion"])
    assert explanation.occlusion is not None
    assert explanation.integrated_gradients is None
    card = await async_client.model_info()
    assert card.version == single.model.version
    with pytest.raises(InvalidRequestError) as caught:
        await async_client.predict("   ")
    assert caught.value.details[0].type == "empty_text"


@pytest.mark.anyio
async def test_a_value_the_service_refuses_is_its_422(async_client: AsyncSentimentClient) -> None:
    """The client sends options as given: the service's own rules and details apply."""
    with pytest.raises(InvalidRequestError) as caught:
        await async_client.hidden_states(TEXT, units=[0], top_k=2)
    assert caught.value.details[0].type == "units_or_top_k"


@pytest.mark.anyio
async def test_async_stream_from_an_async_source(async_client: AsyncSentimentClient) -> None:
    async def typed() -> AsyncIterator[str]:
        for start in range(0, len(TEXT), 5):
            await asyncio.sleep(0)
            yield TEXT[start : start + 5]

    updates = [update async for update in async_client.stream(typed())]
    one_shot = await async_client.predict(TEXT)
    assert len(updates) == len(range(0, len(TEXT), 5)) + 1
    assert updates[-1].final
    assert updates[-1].prediction is not None
    for label, p in one_shot.probabilities.items():
        assert abs(updates[-1].prediction.probabilities[label] - p) <= 1e-5
    with pytest.raises(StreamStateError):
        await async_client.stream_update("more", updates[-1].state)
