"""The bodies the client sends and parses, as its own pydantic models.

They mirror the service's OpenAPI components: each class has the component's name, its field
names and types, and the same required fields (a test compares them with the server's
/openapi.json, recursively, so the two cannot drift apart unnoticed). They are written out here
rather than imported from the server so that the client needs httpx and pydantic only.

Responses ignore fields they do not know: a newer service may add fields (the API adds, never
renames), and an older client keeps working. Requests are built from keyword arguments; an
option left as None is not sent, so the service applies its own default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Dtype = Literal["bfloat16", "float32", "float64"]
Method = Literal["integrated_gradients", "occlusion"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Request(BaseModel):
    """A request body's fields and types. Bodies are built with `body`, which sends the values
    as given: the service checks them and answers 422 with its own details, so there is one
    set of rules, the service's, and the client cannot be stricter or laxer than the API."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def body(cls, **values: Any) -> dict[str, Any]:
        """The JSON body: every option that is not None (None means "the service's default")."""
        unknown = sorted(values.keys() - cls.model_fields.keys())
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
        return {name: value for name, value in values.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Shared pieces


class ModelRef(_Response):
    """Which model answered: its name and version."""

    name: str
    version: str


class Prediction(_Response):
    label: str
    score: float = Field(description="Probability of `label`.")
    probabilities: dict[str, float]


class TokenInfo(_Response):
    text: str = Field(description="The token as written: the request's text[start:end].")
    start: int
    end: int
    id: int = Field(description="Vocabulary id.")
    oov: bool = Field(description="Not in the vocabulary.")


class Step(_Response):
    """The prediction had the text ended at this token."""

    label: str
    probabilities: dict[str, float]


class ErrorDetail(_Response):
    loc: list[str | int]
    msg: str
    type: str
    url: str | None = Field(None, description="A page that helps, when there is one.")


class ErrorBody(_Response):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(_Response):
    """The body of every error response."""

    error: ErrorBody
    request_id: str | None


# ---------------------------------------------------------------------------------------------
# Responses, by route


class TextPrediction(Prediction):
    """A /predict prediction with its text's signals (see the service's /predict docs)."""

    oov_ratio: float = Field(description="Share of the tokens the vocabulary does not know.")
    token_count: int
    truncated: bool = Field(description="More tokens than the model's training texts had.")
    warnings: list[str] = Field(
        description="Stable codes, e.g. 'mostly_unknown_words'; new ones may appear."
    )
    confident: bool | None = Field(
        description="score >= the min_confidence in effect; None when none applies."
    )


class PredictResponse(TextPrediction):
    """POST /predict with one `text`."""

    model: ModelRef


class BatchPredictResponse(_Response):
    """POST /predict with `texts`: one prediction each, in order."""

    predictions: list[TextPrediction]
    model: ModelRef


class LayerStates(_Response):
    layer: int
    direction: Literal["forward", "backward"]
    hidden: list[list[float]] = Field(description="[token][unit]")
    cell: list[list[float]] | None = None
    gates: dict[str, list[list[float]]] | None = None
    units: list[int] | None = Field(None, description="The units shown, when not all of them.")
    norm: list[float] = Field(default_factory=list)
    saturated: list[float] = Field(default_factory=list)


class HiddenStatesResponse(_Response):
    """POST /hidden-states."""

    tokens: list[TokenInfo]
    hidden_size: int = Field(description="Units per layer and direction, shown or not.")
    decimals: int | None = Field(None, description="The rounding applied; None: none.")
    layers: list[LayerStates]
    steps: list[Step]
    steps_note: str | None = None
    flips: list[int] = Field(default_factory=list)
    saturation_threshold: float
    prediction: Prediction
    model: ModelRef


class TokenizedToken(TokenInfo):
    norm: str = Field(description="The form looked up in the vocabulary.")


class TokenizeResponse(_Response):
    """POST /tokenize."""

    tokens: list[TokenizedToken]
    count: int
    oov_count: int
    model: ModelRef


class IntegratedGradientsResult(_Response):
    attributions: list[float]
    baseline: Literal["pad", "unk", "zero"]
    steps: int
    quadrature: Literal["gauss_legendre"]
    logit: float
    baseline_logit: float
    delta: float


class OcclusionResult(_Response):
    replacement: Literal["unk", "drop"]
    attributions: list[float]
    probability_changes: list[float]


class ExplainResponse(_Response):
    """POST /explain: attributions per token, by each method asked for."""

    tokens: list[TokenInfo]
    label: str
    prediction: Prediction
    integrated_gradients: IntegratedGradientsResult | None = None
    occlusion: OcclusionResult | None = None
    model: ModelRef


class StreamResponse(_Response):
    """POST /stream: what a piece added, the prediction so far, the state for the next one."""

    state: str
    position: int
    token_count: int
    tokens: list[TokenInfo]
    steps: list[Step]
    pending: list[TokenInfo]
    pending_steps: list[Step]
    prediction: Prediction | None
    final: bool
    model: ModelRef


class Architecture(_Response):
    cell: str
    embedding_dim: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    parameters: int


class Limits(_Response):
    max_text_chars: int
    max_tokens: int
    max_texts: int
    max_body_bytes: int
    max_hidden_state_tokens: int
    max_response_bytes: int
    max_explain_tokens: int
    max_ig_steps: int


class VocabularyInfo(_Response):
    size: int
    pretrained_rows: int | None
    test_tokens: int | None
    test_tokens_unknown: int | None
    test_coverage: float | None


class EndpointDtypes(_Response):
    predict: Dtype
    hidden_states: Dtype
    explain: Dtype
    stream: Dtype


class InferenceInfo(_Response):
    predict_dtype: Dtype
    state_dtype: Literal["float32", "float64"]
    stream_tolerance: float
    dtypes: EndpointDtypes


class ModelCardResponse(_Response):
    """GET /model: the model card."""

    name: str
    version: str
    sha256: str
    labels: list[str]
    vocab_size: int
    vocabulary: VocabularyInfo
    architecture: Architecture
    metrics: dict[str, Any] | None
    card: dict[str, Any]
    limits: Limits
    inference: InferenceInfo


class ModelStatus(_Response):
    """One model of the service and whether it serves."""

    name: str
    status: str = Field(
        description="`loading`, `ready` or `failed` (a str: a newer service may add states)."
    )


class ReadyResponse(_Response):
    """GET /readyz when ready: the default model, and every model's status."""

    status: Literal["ready"] = "ready"
    model: ModelRef = Field(description="The default model.")
    models: list[ModelStatus] = Field(
        default_factory=list, description="Every model, the default first (empty: one model)."
    )


class ModelSummary(_Response):
    """GET /models/{name}: one model of the service. Only `name`, `default` and `status` are
    known for a model that is not loaded; the rest is None until it is."""

    name: str = Field(description="The name requests use in `model`: its folder's name.")
    version: str | None
    default: bool = Field(description="It answers requests that name no model.")
    status: str = Field(
        description="`loading`, `ready` or `failed` (a str: a newer service may add states)."
    )
    reason: str | None = Field(None, description="Why it failed to load, when it did.")
    architecture: Architecture | None = None
    labels: list[str] | None = None
    metrics: dict[str, Any] | None = None
    memory_bytes: int | None = Field(None, description="Bytes of weights it holds in memory.")


class ModelsResponse(_Response):
    """GET /models: every model of the service, the default first."""

    models: list[ModelSummary]


# ---------------------------------------------------------------------------------------------
# Requests


class PredictRequest(_Request):
    """Exactly one of `text` or `texts` is set."""

    text: str | None = None
    texts: list[str] | None = None
    model: str | None = Field(None, description="Which model answers; None: the default.")
    min_confidence: float | None = Field(
        None, description="Threshold for `confident`; None: the service's setting."
    )


class HiddenStatesRequest(_Request):
    text: str
    layers: Literal["last", "all"] | None = None
    include_cell_state: bool | None = None
    decimals: int | None = None
    include_gates: bool | None = None
    units: list[int] | None = None
    top_k: int | None = None
    full: bool | None = None
    model: str | None = Field(None, description="Which model answers; None: the default.")


class TokenizeRequest(_Request):
    text: str
    model: str | None = Field(None, description="Which model answers; None: the default.")


class ExplainRequest(_Request):
    text: str
    label: str | None = None
    methods: list[Method] | None = None
    steps: int | None = None
    baseline: Literal["pad", "unk", "zero"] | None = None
    occlusion: Literal["unk", "drop"] | None = None
    decimals: int | None = None
    model: str | None = Field(None, description="Which model answers; None: the default.")


class StreamRequest(_Request):
    text: str = ""
    state: str | None = Field(None, description="None starts a new stream.")
    final: bool = False
    model: str | None = Field(None, description="Which model answers; None: the default.")
