"""A typed Python client for the rnn-sentiment API, synchronous and asynchronous, and a CLI.

    from rnn_sentiment_client import SentimentClient

    with SentimentClient("http://127.0.0.1:8000") as client:
        result = client.predict("The food was great")  # PredictResponse
        print(result.label, result.score)
        for update in client.stream(["The food was gre", "at but the serv", "ice was slow."]):
            print(update.position, update.prediction)

`AsyncSentimentClient` has the same methods, to be awaited (`stream` is an async iterator).
A service may serve several models: every method that sends text takes `model="name"` (left
out: the service's default model), `models()` lists them and `get_model(name)` describes one.
Results are pydantic models named after the API's schemas (`PredictResponse`,
`HiddenStatesResponse`, ...), so a field the API documents is an attribute here, typed. The
package needs httpx and pydantic only: it imports neither torch nor the server.

Failures raise `SentimentError` subclasses: `APIConnectionError` when the service cannot be
reached, and for an error response an `APIError` subclass chosen by its status (and, for
streams and unknown models, its code), carrying the error body's `code`, `message`, `details`
and `request_id`. Connection failures, timeouts, 429 and 503 are retried with backoff
(`RetryPolicy`).

The command line is `rnn-sentiment-client` (or `python -m rnn_sentiment_client`); `--help`.
"""

from rnn_sentiment_client._base import DEFAULT_TIMEOUT_S, DEFAULT_URL, __version__
from rnn_sentiment_client._models import (
    Architecture,
    BatchPredictResponse,
    EndpointDtypes,
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    ExplainResponse,
    HiddenStatesResponse,
    InferenceInfo,
    IntegratedGradientsResult,
    LayerStates,
    Limits,
    ModelCardResponse,
    ModelRef,
    ModelsResponse,
    ModelStatus,
    ModelSummary,
    OcclusionResult,
    Prediction,
    PredictResponse,
    ReadyResponse,
    Step,
    StreamResponse,
    TextPrediction,
    TokenInfo,
    TokenizedToken,
    TokenizeResponse,
    VocabularyInfo,
)
from rnn_sentiment_client._retry import RetryPolicy
from rnn_sentiment_client.async_client import AsyncSentimentClient
from rnn_sentiment_client.client import SentimentClient
from rnn_sentiment_client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    NotFoundError,
    RateLimitedError,
    SentimentError,
    ServerError,
    StreamStateError,
    UnavailableError,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "APIConnectionError",
    "APIError",
    "Architecture",
    "AsyncSentimentClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchPredictResponse",
    "ConflictError",
    "EndpointDtypes",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "ExplainResponse",
    "HiddenStatesResponse",
    "InferenceInfo",
    "IntegratedGradientsResult",
    "InvalidRequestError",
    "LayerStates",
    "Limits",
    "ModelCardResponse",
    "ModelNotFoundError",
    "ModelRef",
    "ModelStatus",
    "ModelSummary",
    "ModelsResponse",
    "NotFoundError",
    "OcclusionResult",
    "PredictResponse",
    "Prediction",
    "RateLimitedError",
    "ReadyResponse",
    "RetryPolicy",
    "SentimentClient",
    "SentimentError",
    "ServerError",
    "Step",
    "StreamResponse",
    "StreamStateError",
    "TextPrediction",
    "TokenInfo",
    "TokenizeResponse",
    "TokenizedToken",
    "UnavailableError",
    "VocabularyInfo",
    "__version__",
]
