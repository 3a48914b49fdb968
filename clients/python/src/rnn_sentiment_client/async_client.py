"""`AsyncSentimentClient`: `SentimentClient` for asyncio, the same methods, awaited.

async with AsyncSentimentClient("http://127.0.0.1:8000") as client:
    result = await client.predict("The food was great")
    async for update in client.stream(pieces):  # pieces: an iterable or an async one
        print(update.position, update.prediction)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any, Literal, overload

import httpx

from rnn_sentiment_client._base import DEFAULT_TIMEOUT_S, DEFAULT_URL, Base
from rnn_sentiment_client._models import (
    BatchPredictResponse,
    ExplainResponse,
    HiddenStatesResponse,
    Method,
    ModelCardResponse,
    ModelsResponse,
    ModelSummary,
    PredictResponse,
    ReadyResponse,
    StreamResponse,
    TokenizeResponse,
)
from rnn_sentiment_client._retry import RetryPolicy


class AsyncSentimentClient(Base):
    """`SentimentClient` for asyncio: the same methods, awaited; `async with` it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncSentimentClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> httpx.Response:
        attempt = 0
        while True:
            result: httpx.Response | httpx.TransportError
            try:
                result = await self._http.request(method, path, json=body)
            except httpx.TransportError as error:
                result = error
            wait = self.retry.outcome(result, attempt)
            if wait is None:
                return self._final(result)
            await asyncio.sleep(wait)
            attempt += 1

    # A str is also a Sequence[str]; this first overload is the one that applies to it.
    @overload
    async def predict(  # type: ignore[overload-overlap]
        self, text: str, *, model: str | None = None, min_confidence: float | None = None
    ) -> PredictResponse: ...
    @overload
    async def predict(
        self,
        text: Sequence[str],
        *,
        model: str | None = None,
        min_confidence: float | None = None,
    ) -> BatchPredictResponse: ...
    async def predict(
        self,
        text: str | Sequence[str],
        *,
        model: str | None = None,
        min_confidence: float | None = None,
    ) -> PredictResponse | BatchPredictResponse:
        """The sentiment of one text, or of a list of texts (answered in order), by the model
        named `model` (None: the service's default).

        `min_confidence` marks each prediction `confident` when its score reaches it (None: the
        service's APP_MIN_CONFIDENCE, if set)."""
        body = self._predict_body(text, model, min_confidence)
        response = await self._send("POST", "/predict", body)
        if isinstance(text, str):
            return self._parse(response, PredictResponse)
        return self._parse(response, BatchPredictResponse)

    async def hidden_states(
        self,
        text: str,
        *,
        layers: Literal["last", "all"] = "last",
        include_cell_state: bool = False,
        include_gates: bool = False,
        units: Sequence[int] | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
        full: bool = False,
        model: str | None = None,
    ) -> HiddenStatesResponse:
        """Tokens, per-token states and predictions (see POST /hidden-states).

        By default the service shows its most active units, rounded; `units` or `top_k`
        choose the units, `decimals` the rounding, and `full` asks for every unit unrounded.
        """
        body = self._hidden_states_body(
            text, layers, include_cell_state, include_gates, units, top_k, decimals, full, model
        )
        return self._parse(await self._send("POST", "/hidden-states", body), HiddenStatesResponse)

    async def tokenize(self, text: str, *, model: str | None = None) -> TokenizeResponse:
        """The tokens the model reads in `text`, with ids and out-of-vocabulary flags."""
        response = await self._send("POST", "/tokenize", self._tokenize_body(text, model))
        return self._parse(response, TokenizeResponse)

    async def explain(
        self,
        text: str,
        *,
        label: str | None = None,
        methods: Sequence[Method] | None = None,
        steps: int | None = None,
        baseline: Literal["pad", "unk", "zero"] | None = None,
        occlusion: Literal["unk", "drop"] | None = None,
        decimals: int | None = None,
        model: str | None = None,
    ) -> ExplainResponse:
        """Per-token attributions toward `label` (default: the predicted one)."""
        body = self._explain_body(text, label, methods, steps, baseline, occlusion, decimals, model)
        return self._parse(await self._send("POST", "/explain", body), ExplainResponse)

    async def stream_update(
        self,
        text: str = "",
        state: str | None = None,
        *,
        final: bool = False,
        model: str | None = None,
    ) -> StreamResponse:
        """One POST /stream: read `text` on from `state` (None starts a new stream). A state
        belongs to the model that made it: send every piece of a stream with the same `model`.
        """
        body = self._stream_body(text, state, final, model)
        return self._parse(await self._send("POST", "/stream", body), StreamResponse)

    async def stream(
        self,
        pieces: Iterable[str] | AsyncIterable[str],
        *,
        state: str | None = None,
        final: bool = True,
        model: str | None = None,
    ) -> AsyncIterator[StreamResponse]:
        """An update per piece of text, as the pieces come (from an iterable or an async one,
        e.g. a queue fed by a microphone); with `final`, one more that ends the stream. Every
        piece goes to the model named `model` (None: the default)."""
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                update = await self.stream_update(piece, state, model=model)
                state = update.state
                yield update
        else:
            for piece in pieces:
                update = await self.stream_update(piece, state, model=model)
                state = update.state
                yield update
        if final:
            yield await self.stream_update("", state, final=True, model=model)

    async def model_info(self) -> ModelCardResponse:
        """The default model's card: architecture, labels, vocabulary, metrics and limits."""
        return self._parse(await self._send("GET", "/model"), ModelCardResponse)

    async def models(self) -> ModelsResponse:
        """Every model the service holds, the default first, with its status and version."""
        return self._parse(await self._send("GET", "/models"), ModelsResponse)

    async def get_model(self, name: str) -> ModelSummary:
        """The model called `name`; `ModelNotFoundError` (its `known` lists the names) when
        the service holds none of that name."""
        return self._parse(await self._send("GET", self._model_path(name)), ModelSummary)

    async def ready(self) -> bool:
        """Whether the service answers /readyz with 200 now (one try, no retries)."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> ReadyResponse:
        """Poll /readyz until it answers 200; `TimeoutError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = await self._http.get("/readyz")
                if response.status_code == 200:
                    return self._parse(response, ReadyResponse)
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise self._not_ready(timeout_s)
            await asyncio.sleep(interval_s)
