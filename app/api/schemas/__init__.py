"""Request and response bodies: the API's contract, as pydantic models.

One module per family of routes (`predict`, `hidden_states`, `tokenize`, `explain`, `stream`,
`model`, `operations`), what they share in `common`, and the OpenAPI examples in `examples`.
Class names are the OpenAPI component names clients see, and field names are the wire names:
fields may be added, never renamed. Limits that depend on settings (characters, texts per
request, ...) are declared on their fields (`app.api.schemas.bounds`), checked where the request
is served, and written into /openapi.json from the running instance's settings (`app.openapi`).

Only the API layer (`app.api`, and the fast /predict path) uses these models; the inference code
has its own result types, which `app.api.responses` turns into these. The Python client
(`clients/python`) keeps its own copies, held to these by `tests/client/test_schema_parity.py`,
which compares them with /openapi.json. Everything is re-exported here for callers that use the
contract as a whole.
"""

from app.api.schemas.common import (
    ErrorBody,
    ErrorDetail,
    ErrorResponse,
    ModelRef,
    Prediction,
    Step,
    Text,
    TokenInfo,
)
from app.api.schemas.examples import (
    EXPLAIN_EXAMPLES,
    HIDDEN_STATES_EXAMPLES,
    PREDICT_EXAMPLES,
    STREAM_EXAMPLES,
    TOKENIZE_EXAMPLES,
)
from app.api.schemas.explain import (
    ExplainRequest,
    ExplainResponse,
    IntegratedGradientsResult,
    Method,
    OcclusionResult,
)
from app.api.schemas.hidden_states import HiddenStatesRequest, HiddenStatesResponse, LayerStates
from app.api.schemas.model import (
    Architecture,
    InferenceInfo,
    Limits,
    ModelCardResponse,
    VocabularyInfo,
)
from app.api.schemas.operations import HealthResponse, ReadyResponse, ReloadResponse
from app.api.schemas.predict import BatchPredictResponse, PredictRequest, PredictResponse
from app.api.schemas.stream import StreamRequest, StreamResponse
from app.api.schemas.tokenize import TokenizedToken, TokenizeRequest, TokenizeResponse

__all__ = [
    "EXPLAIN_EXAMPLES",
    "HIDDEN_STATES_EXAMPLES",
    "PREDICT_EXAMPLES",
    "STREAM_EXAMPLES",
    "TOKENIZE_EXAMPLES",
    "Architecture",
    "BatchPredictResponse",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "ExplainRequest",
    "ExplainResponse",
    "HealthResponse",
    "HiddenStatesRequest",
    "HiddenStatesResponse",
    "InferenceInfo",
    "IntegratedGradientsResult",
    "LayerStates",
    "Limits",
    "Method",
    "ModelCardResponse",
    "ModelRef",
    "OcclusionResult",
    "PredictRequest",
    "PredictResponse",
    "Prediction",
    "ReadyResponse",
    "ReloadResponse",
    "Step",
    "StreamRequest",
    "StreamResponse",
    "Text",
    "TokenInfo",
    "TokenizeRequest",
    "TokenizeResponse",
    "TokenizedToken",
    "VocabularyInfo",
]
