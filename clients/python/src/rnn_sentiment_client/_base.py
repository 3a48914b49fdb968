"""What the synchronous and the asynchronous client share: headers, request bodies, retries'
bookkeeping, turning a final response into a model or an error.

A `model` given to a method is sent as the body's `"model"`; None leaves it out, and the
service's default model answers (a service that serves one model needs nothing else).

Only the sending differs between the two (`httpx.Client` or `httpx.AsyncClient`, `time.sleep`
or `asyncio.sleep`), so everything else lives here and both clients stay thin.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from rnn_sentiment_client._models import (
    ExplainRequest,
    HiddenStatesRequest,
    Method,
    PredictRequest,
    StreamRequest,
    TokenizeRequest,
)
from rnn_sentiment_client._retry import RetryPolicy
from rnn_sentiment_client.errors import APIConnectionError, error_from

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
Model = TypeVar("Model", bound=BaseModel)


def _version() -> str:
    try:
        return metadata.version("rnn-sentiment-client")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
USER_AGENT = f"rnn-sentiment-client/{__version__}"


class Base:
    """The parts of a client that do not send anything."""

    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    @staticmethod
    def _final(result: httpx.Response | httpx.TransportError) -> httpx.Response:
        """The response when it is a success; otherwise the error that says what went wrong."""
        if isinstance(result, httpx.TransportError):
            raise APIConnectionError(f"{type(result).__name__}: {result}") from result
        if result.status_code >= 400:
            raise error_from(result)
        return result

    @staticmethod
    def _parse(response: httpx.Response, model: type[Model]) -> Model:
        return model.model_validate_json(response.content)

    @staticmethod
    def _predict_body(
        text: str | Sequence[str], model: str | None, min_confidence: float | None = None
    ) -> dict[str, Any]:
        if isinstance(text, str):
            return PredictRequest.body(text=text, model=model, min_confidence=min_confidence)
        return PredictRequest.body(texts=list(text), model=model, min_confidence=min_confidence)

    @staticmethod
    def _hidden_states_body(
        text: str,
        layers: str,
        include_cell_state: bool,
        include_gates: bool,
        units: Sequence[int] | None,
        top_k: int | None,
        decimals: int | None,
        full: bool,
        model: str | None,
    ) -> dict[str, Any]:
        return HiddenStatesRequest.body(
            text=text,
            layers=layers,
            include_cell_state=include_cell_state,
            include_gates=include_gates,
            units=None if units is None else list(units),
            top_k=top_k,
            decimals=decimals,
            # Sent only when asked for: a service older than `full` refuses unknown fields.
            full=True if full else None,
            model=model,
        )

    @staticmethod
    def _tokenize_body(text: str, model: str | None) -> dict[str, Any]:
        return TokenizeRequest.body(text=text, model=model)

    @staticmethod
    def _explain_body(
        text: str,
        label: str | None,
        methods: Sequence[Method] | None,
        steps: int | None,
        baseline: str | None,
        occlusion: str | None,
        decimals: int | None,
        model: str | None,
    ) -> dict[str, Any]:
        return ExplainRequest.body(
            text=text,
            label=label,
            methods=None if methods is None else list(methods),
            steps=steps,
            baseline=baseline,
            occlusion=occlusion,
            decimals=decimals,
            model=model,
        )

    @staticmethod
    def _stream_body(
        text: str, state: str | None, final: bool, model: str | None
    ) -> dict[str, Any]:
        return StreamRequest.body(text=text, state=state, final=final, model=model)

    @staticmethod
    def _model_path(name: str) -> str:
        """GET /models/{name}, the name escaped: it is a path segment, whatever it holds."""
        return "/models/" + quote(name, safe="")

    def _not_ready(self, timeout_s: float) -> TimeoutError:
        return TimeoutError(f"{self.base_url} was not ready within {timeout_s:g} s")
