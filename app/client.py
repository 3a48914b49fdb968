"""A typed Python client for the rnn-sentiment API, synchronous and asynchronous, and a CLI.

    from app.client import SentimentClient

    with SentimentClient("http://127.0.0.1:8000") as client:
        result = client.predict("The food was great")  # PredictResponse
        print(result.label, result.score)
        for update in client.stream(["The food was gre", "at but the serv", "ice was slow."]):
            print(update.position, update.prediction)

`AsyncSentimentClient` has the same methods, to be awaited (`stream` is an async iterator).
Results are the server's own response models (`app.api.schemas`), so a field the API documents is
an attribute here, typed. The client needs httpx and pydantic only: it imports neither torch nor
FastAPI, so an application can use it without the model's dependencies.

Failures raise `SentimentError` subclasses: `APIConnectionError` when the service cannot be
reached, and for an error response an `APIError` subclass chosen by its status (and, for
streams, its code), carrying the error body's `code`, `message`, `details` and `request_id`.

Retries. Every route of this API is a pure function of its request (streams included: their
state travels with the request), so a request can safely be sent again. The client retries
connection failures, timeouts, 429 and 503 up to `retries` times, waiting `backoff_s` and then
twice as long each time (with jitter, up to `max_backoff_s`); a 429 or 503 with `Retry-After`
waits exactly that long, unless it is longer than `max_backoff_s`, in which case the error is
raised at once (with `retry_after`) for the caller to decide.

CLI: `python -m app.client predict "text"` (no text: one text per stdin line, sent in batches),
`stream`, `tokenize`, `explain`, `model`, `ready`; `--help` for the options. The service's
address and key come from `--url` / `--api-key` or `RNN_SENTIMENT_URL` / `RNN_SENTIMENT_API_KEY`.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import random
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, TypeVar, overload

import httpx
from pydantic import BaseModel, ValidationError

from app.api.schemas import (
    BatchPredictResponse,
    ErrorDetail,
    ErrorResponse,
    ExplainResponse,
    HiddenStatesResponse,
    ModelCardResponse,
    Prediction,
    PredictResponse,
    ReadyResponse,
    StreamResponse,
    TokenizeResponse,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncSentimentClient",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "ServerError",
    "StreamStateError",
    "UnavailableError",
]

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 10.0
_USER_AGENT = "rnn-sentiment-client/1"
Model = TypeVar("Model", bound=BaseModel)


# ---------------------------------------------------------------------------------------------
# Errors


class SentimentError(Exception):
    """Anything the client could not do."""


class APIConnectionError(SentimentError):
    """The service could not be reached, or did not answer in time (after the retries)."""


class APIError(SentimentError):
    """The service answered with an error: its status and the common error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = list(details)
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIError):
    """400 malformed JSON, 413 body too large or 415 not JSON: a bug in how it was sent."""


class AuthenticationError(APIError):
    """401: the API key is missing or wrong."""


class NotFoundError(APIError):
    """404 or 405: no such route on this service (an older version, or a wrong URL)."""


class ConflictError(APIError):
    """409: the served model cannot do this (e.g. a bidirectional model cannot stream)."""


class InvalidRequestError(APIError):
    """422: the input breaks a rule or a limit; `details` says which field and why."""


class StreamStateError(APIError):
    """The stream cannot continue from this state (422 `invalid_state`, or 409
    `state_model_mismatch` after a model change): start a new stream."""


class RateLimitedError(APIError):
    """429: too many requests (after the retries)."""


class UnavailableError(APIError):
    """503: not ready or overloaded (after the retries); see `retry_after`."""


class ServerError(APIError):
    """Any other 5xx."""


_ERRORS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    404: NotFoundError,
    405: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    422: InvalidRequestError,
    429: RateLimitedError,
    503: UnavailableError,
}
_STREAM_STATE_CODES = frozenset({"invalid_state", "state_model_mismatch"})


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (it may be a number or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_from(response: httpx.Response) -> APIError:
    """The typed error for an error response, from its body when it has the common shape."""
    status = response.status_code
    try:
        body = ErrorResponse.model_validate_json(response.content)
        code, message = body.error.code, body.error.message
        details: list[ErrorDetail] = body.error.details
        request_id = body.request_id
    except ValidationError:
        # Not this API's body: a proxy or load balancer answered.
        code = f"http_{status}"
        message = response.text[:200].strip() or response.reason_phrase
        details = []
        request_id = response.headers.get("x-request-id")
    if code in _STREAM_STATE_CODES:
        kind: type[APIError] = StreamStateError
    else:
        kind = _ERRORS_BY_STATUS.get(status, ServerError if status >= 500 else APIError)
    return kind(
        status,
        code,
        message,
        details=details,
        request_id=request_id,
        retry_after=_retry_after(response),
    )


# ---------------------------------------------------------------------------------------------
# Shared by both clients


@dataclass(frozen=True)
class RetryPolicy:
    """How failed requests are retried (see the module doc)."""

    retries: int = 3  # attempts after the first
    backoff_s: float = 0.25  # the first wait; doubled for each further retry
    max_backoff_s: float = 10.0  # no wait is longer, and a longer Retry-After is not waited
    statuses: frozenset[int] = frozenset({429, 503})

    def wait(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number `attempt` (0-based), or None to give up."""
        if attempt >= self.retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_backoff_s else None
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return ceiling * (0.5 + random.random() / 2)  # jitter: clients do not retry in step


class _Base:
    def __init__(self, base_url: str, api_key: str | None, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self._headers = {"user-agent": _USER_AGENT, "accept": "application/json"}
        if api_key:
            self._headers["authorization"] = f"Bearer {api_key}"

    def _outcome(self, result: httpx.Response | httpx.TransportError, attempt: int) -> float | None:
        """Seconds to wait before trying again, or None when `result` is final."""
        if isinstance(result, httpx.Response):
            if result.status_code not in self.retry.statuses:
                return None
            return self.retry.wait(attempt, _retry_after(result))
        return self.retry.wait(attempt, None)

    @staticmethod
    def _final(result: httpx.Response | httpx.TransportError) -> httpx.Response:
        if isinstance(result, httpx.TransportError):
            raise APIConnectionError(f"{type(result).__name__}: {result}") from result
        if result.status_code >= 400:
            raise _error_from(result)
        return result

    @staticmethod
    def _predict_body(text: str | Sequence[str]) -> dict[str, Any]:
        return {"text": text} if isinstance(text, str) else {"texts": list(text)}

    @staticmethod
    def _body(text: str, options: dict[str, Any]) -> dict[str, Any]:
        return {"text": text, **{key: value for key, value in options.items() if value is not None}}

    @classmethod
    def _hidden_states_body(
        cls,
        text: str,
        layers: str,
        include_cell_state: bool,
        include_gates: bool,
        units: Sequence[int] | None,
        top_k: int | None,
        decimals: int | None,
    ) -> dict[str, Any]:
        return cls._body(
            text,
            {
                "layers": layers,
                "include_cell_state": include_cell_state,
                "include_gates": include_gates,
                "units": None if units is None else list(units),
                "top_k": top_k,
                "decimals": decimals,
            },
        )

    @classmethod
    def _explain_body(
        cls,
        text: str,
        label: str | None,
        methods: Sequence[str] | None,
        steps: int | None,
        baseline: str | None,
        occlusion: str | None,
        decimals: int | None,
    ) -> dict[str, Any]:
        return cls._body(
            text,
            {
                "label": label,
                "methods": None if methods is None else list(methods),
                "steps": steps,
                "baseline": baseline,
                "occlusion": occlusion,
                "decimals": decimals,
            },
        )

    @staticmethod
    def _parse(response: httpx.Response, model: type[Model]) -> Model:
        return model.model_validate_json(response.content)


# ---------------------------------------------------------------------------------------------
# Synchronous


class SentimentClient(_Base):
    """A client for one rnn-sentiment service; use it as a context manager, or `close()` it."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, retry)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> SentimentClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        attempt = 0
        while True:
            result: httpx.Response | httpx.TransportError
            try:
                result = self._http.request(method, path, json=body)
            except httpx.TransportError as error:
                result = error
            wait = self._outcome(result, attempt)
            if wait is None:
                return self._final(result)
            time.sleep(wait)
            attempt += 1

    # A str is also a Sequence[str]; this first overload is the one that applies to it.
    @overload
    def predict(self, text: str) -> PredictResponse: ...  # type: ignore[overload-overlap]
    @overload
    def predict(self, text: Sequence[str]) -> BatchPredictResponse: ...
    def predict(self, text: str | Sequence[str]) -> PredictResponse | BatchPredictResponse:
        """The sentiment of one text, or of a list of texts (answered in order)."""
        response = self._send("POST", "/predict", self._predict_body(text))
        if isinstance(text, str):
            return self._parse(response, PredictResponse)
        return self._parse(response, BatchPredictResponse)

    def hidden_states(
        self,
        text: str,
        *,
        layers: Literal["last", "all"] = "last",
        include_cell_state: bool = False,
        include_gates: bool = False,
        units: Sequence[int] | None = None,
        top_k: int | None = None,
        decimals: int | None = None,
    ) -> HiddenStatesResponse:
        """Tokens, per-token states and predictions (see POST /hidden-states)."""
        body = self._hidden_states_body(
            text, layers, include_cell_state, include_gates, units, top_k, decimals
        )
        return self._parse(self._send("POST", "/hidden-states", body), HiddenStatesResponse)

    def tokenize(self, text: str) -> TokenizeResponse:
        """The tokens the model reads in `text`, with ids and out-of-vocabulary flags."""
        return self._parse(self._send("POST", "/tokenize", {"text": text}), TokenizeResponse)

    def explain(
        self,
        text: str,
        *,
        label: str | None = None,
        methods: Sequence[Literal["integrated_gradients", "occlusion"]] | None = None,
        steps: int | None = None,
        baseline: Literal["pad", "unk", "zero"] | None = None,
        occlusion: Literal["unk", "drop"] | None = None,
        decimals: int | None = None,
    ) -> ExplainResponse:
        """Per-token attributions toward `label` (default: the predicted one)."""
        body = self._explain_body(text, label, methods, steps, baseline, occlusion, decimals)
        return self._parse(self._send("POST", "/explain", body), ExplainResponse)

    def stream_update(
        self, text: str = "", state: str | None = None, *, final: bool = False
    ) -> StreamResponse:
        """One POST /stream: read `text` on from `state` (None starts a new stream)."""
        body = {"text": text, "state": state, "final": final}
        return self._parse(self._send("POST", "/stream", body), StreamResponse)

    def stream(
        self, pieces: Iterable[str], *, state: str | None = None, final: bool = True
    ) -> Iterator[StreamResponse]:
        """An update per piece of text, as the pieces come (a generator may still be producing
        them); with `final`, one more that reads the unfinished last word and ends the stream.
        """
        for piece in pieces:
            update = self.stream_update(piece, state)
            state = update.state
            yield update
        if final:
            yield self.stream_update("", state, final=True)

    def model_info(self) -> ModelCardResponse:
        """The model card: architecture, labels, vocabulary, metrics and limits."""
        return self._parse(self._send("GET", "/model"), ModelCardResponse)

    def ready(self) -> bool:
        """Whether the service answers /readyz with 200 now (one try, no retries)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200

    def wait_ready(self, timeout_s: float = 60.0, interval_s: float = 0.25) -> ReadyResponse:
        """Poll /readyz until it answers 200; `TimeoutError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                response = self._http.get("/readyz")
                if response.status_code == 200:
                    return self._parse(response, ReadyResponse)
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.base_url} was not ready within {timeout_s:g} s")
            time.sleep(interval_s)


# ---------------------------------------------------------------------------------------------
# Asynchronous


class AsyncSentimentClient(_Base):
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
            wait = self._outcome(result, attempt)
            if wait is None:
                return self._final(result)
            await asyncio.sleep(wait)
            attempt += 1

    # A str is also a Sequence[str]; this first overload is the one that applies to it.
    @overload
    async def predict(self, text: str) -> PredictResponse: ...  # type: ignore[overload-overlap]
    @overload
    async def predict(self, text: Sequence[str]) -> BatchPredictResponse: ...
    async def predict(self, text: str | Sequence[str]) -> PredictResponse | BatchPredictResponse:
        """The sentiment of one text, or of a list of texts (answered in order)."""
        response = await self._send("POST", "/predict", self._predict_body(text))
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
    ) -> HiddenStatesResponse:
        """Tokens, per-token states and predictions (see POST /hidden-states)."""
        body = self._hidden_states_body(
            text, layers, include_cell_state, include_gates, units, top_k, decimals
        )
        return self._parse(await self._send("POST", "/hidden-states", body), HiddenStatesResponse)

    async def tokenize(self, text: str) -> TokenizeResponse:
        """The tokens the model reads in `text`, with ids and out-of-vocabulary flags."""
        response = await self._send("POST", "/tokenize", {"text": text})
        return self._parse(response, TokenizeResponse)

    async def explain(
        self,
        text: str,
        *,
        label: str | None = None,
        methods: Sequence[Literal["integrated_gradients", "occlusion"]] | None = None,
        steps: int | None = None,
        baseline: Literal["pad", "unk", "zero"] | None = None,
        occlusion: Literal["unk", "drop"] | None = None,
        decimals: int | None = None,
    ) -> ExplainResponse:
        """Per-token attributions toward `label` (default: the predicted one)."""
        body = self._explain_body(text, label, methods, steps, baseline, occlusion, decimals)
        return self._parse(await self._send("POST", "/explain", body), ExplainResponse)

    async def stream_update(
        self, text: str = "", state: str | None = None, *, final: bool = False
    ) -> StreamResponse:
        """One POST /stream: read `text` on from `state` (None starts a new stream)."""
        body = {"text": text, "state": state, "final": final}
        return self._parse(await self._send("POST", "/stream", body), StreamResponse)

    async def stream(
        self,
        pieces: Iterable[str] | AsyncIterable[str],
        *,
        state: str | None = None,
        final: bool = True,
    ) -> AsyncIterator[StreamResponse]:
        """An update per piece of text, as the pieces come (from an iterable or an async one,
        e.g. a queue fed by a microphone); with `final`, one more that ends the stream."""
        if isinstance(pieces, AsyncIterable):
            async for piece in pieces:
                update = await self.stream_update(piece, state)
                state = update.state
                yield update
        else:
            for piece in pieces:
                update = await self.stream_update(piece, state)
                state = update.state
                yield update
        if final:
            yield await self.stream_update("", state, final=True)

    async def model_info(self) -> ModelCardResponse:
        """The model card: architecture, labels, vocabulary, metrics and limits."""
        return self._parse(await self._send("GET", "/model"), ModelCardResponse)

    async def ready(self) -> bool:
        """Whether the service answers /readyz with 200 now (one try, no retries)."""
        try:
            response = await self._http.get("/readyz")
        except httpx.TransportError:
            return False
        return response.status_code == 200


# ---------------------------------------------------------------------------------------------
# CLI


def _format_probabilities(probabilities: dict[str, float]) -> str:
    return " ".join(f"{label}={p:.3f}" for label, p in probabilities.items())


def _print_prediction(
    out: TextIO, label: str, score: float, probabilities: dict[str, float], text: str
) -> None:
    out.write(f"{label:<9} {score:.3f}  {_format_probabilities(probabilities)}  {text}\n")


def _stdin_texts(stdin: TextIO) -> Iterator[str]:
    for line in stdin:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _cut(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def _predict(args: argparse.Namespace, client: SentimentClient, out: TextIO, stdin: TextIO) -> int:
    texts: Iterable[str] = args.texts
    if not args.texts or args.texts == ["-"]:
        texts = _stdin_texts(stdin)
    for batch in _batches(texts, args.batch_size):
        # One text goes alone, so an error about it names `text`, not `texts.0`.
        predictions: Sequence[Prediction] = (
            [client.predict(batch[0])] if len(batch) == 1 else client.predict(batch).predictions
        )
        for text, prediction in zip(batch, predictions, strict=True):
            if args.json:
                line = {"text": text, **prediction.model_dump()}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            else:
                _print_prediction(
                    out, prediction.label, prediction.score, prediction.probabilities, text
                )
    return 0


def _stream(args: argparse.Namespace, client: SentimentClient, out: TextIO, stdin: TextIO) -> int:
    text = stdin.read() if args.text in (None, "-") else args.text
    for update in client.stream(_cut(text, args.chunk_size)):
        if args.json:
            out.write(update.model_dump_json(exclude={"state"}) + "\n")
            continue
        read = " ".join(token.text for token in update.tokens)
        pending = " ".join(token.text for token in update.pending)
        prediction = update.prediction
        guess = "-" if prediction is None else f"{prediction.label} {prediction.score:.3f}"
        where = "final" if update.final else f"{update.position:>5}"
        words = "  ".join(part for part in (read, f"~{pending}" if pending else "") if part)
        out.write(f"{where}  {guess:<16}  {words}".rstrip() + "\n")
    return 0


def _tokenize(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    tokens = client.tokenize(args.text)
    if args.json:
        out.write(tokens.model_dump_json() + "\n")
        return 0
    for token in tokens.tokens:
        unknown = "  (unknown)" if token.oov else ""
        out.write(f"{token.start:>5}-{token.end:<5} {token.text!r} -> {token.norm}{unknown}\n")
    return 0


def _explain(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    explanation = client.explain(args.text, label=args.label)
    if args.json:
        out.write(explanation.model_dump_json(exclude_none=True) + "\n")
        return 0
    prediction = explanation.prediction
    _print_prediction(out, prediction.label, prediction.score, prediction.probabilities, args.text)
    out.write(f"attributions toward {explanation.label}:\n")
    gradients = explanation.integrated_gradients
    occlusion = explanation.occlusion
    for index, token in enumerate(explanation.tokens):
        ig = (
            ""
            if gradients is None
            else f"  integrated gradients {gradients.attributions[index]:+.3f}"
        )
        occ = "" if occlusion is None else f"  occlusion {occlusion.attributions[index]:+.3f}"
        out.write(f"  {token.text:<16}{ig}{occ}\n")
    return 0


def _model(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    card = client.model_info()
    if args.json:
        out.write(card.model_dump_json() + "\n")
        return 0
    arch = card.architecture
    direction = "bidirectional" if arch.bidirectional else "unidirectional"
    out.write(
        f"{card.name} {card.version}: {arch.cell}, {arch.num_layers} layer(s) of "
        f"{arch.hidden_size} units, {direction}, {arch.parameters} weights; "
        f"labels {', '.join(card.labels)}; vocabulary {card.vocab_size}\n"
    )
    return 0


def _ready(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    ready = client.ready()
    out.write(("ready" if ready else "not ready") + "\n")
    return 0 if ready else 1


_COMMANDS = {
    "predict": _predict,
    "stream": _stream,
    "tokenize": _tokenize,
    "explain": _explain,
    "model": _model,
    "ready": _ready,
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.client", description="Call an rnn-sentiment service."
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("RNN_SENTIMENT_URL", DEFAULT_URL),
        help="service address (env RNN_SENTIMENT_URL; default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("RNN_SENTIMENT_API_KEY"),
        help="API key (env RNN_SENTIMENT_API_KEY)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="label texts: arguments, or one text per stdin line"
    )
    predict.add_argument("texts", nargs="*", help="texts; none or '-': read stdin lines")
    predict.add_argument(
        "--batch-size", type=int, default=32, help="texts per request (default %(default)s)"
    )
    stream = commands.add_parser("stream", help="send a text in pieces, print every update")
    stream.add_argument("text", nargs="?", help="the text; none or '-': read stdin")
    stream.add_argument(
        "--chunk-size", type=int, default=8, help="characters per piece (default %(default)s)"
    )
    tokenize = commands.add_parser("tokenize", help="show the tokens the model reads")
    tokenize.add_argument("text")
    explain = commands.add_parser("explain", help="per-token attributions")
    explain.add_argument("text")
    explain.add_argument("--label", help="label to explain (default: the predicted one)")
    commands.add_parser("model", help="the model card")
    commands.add_parser("ready", help="exit 0 when the service is ready, else 1")
    return parser


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    args = _parser().parse_args(argv)
    out = out or sys.stdout
    try:
        with SentimentClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            return _COMMANDS[args.command](args, client, out, stdin or sys.stdin)
    except APIError as error:
        sys.stderr.write(f"error: {error}\n")
        for detail in error.details:
            location = ".".join(str(part) for part in detail.loc)
            sys.stderr.write(f"  {location}: {detail.msg} ({detail.type})\n")
        return 1
    except APIConnectionError as error:
        sys.stderr.write(f"error: cannot reach {args.url}: {error}\n")
        return 1
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Python's own flush of stdout at
        # exit would fail again, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
