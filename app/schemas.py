"""Request and response bodies: the API's contract, as pydantic models.

Field names here are fixed by the contract (issue 3): fields may be added, never renamed.
Limits that depend on settings (characters, tokens, texts per request) are checked by the
routes and written into `/openapi.json` by `app.main`, so the schema states the limits the
running service enforces.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# ---------------------------------------------------------------------------------------------
# Requests


def _readable_text(value: str) -> str:
    if not value or value.isspace():
        raise PydanticCustomError(
            "empty_text", "text must contain at least one non-whitespace character"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "invalid_unicode", "text contains a lone surrogate code point and is not valid Unicode"
        ) from None
    return value


Text = Annotated[
    str,
    AfterValidator(_readable_text),
    Field(description="Text to classify: any Unicode, at least one non-whitespace character."),
]

PREDICT_EXAMPLES: dict[str, dict[str, Any]] = {
    "single": {
        "summary": "One text",
        "value": {"text": "The food was great but the service was painfully slow."},
    },
    "batch": {
        "summary": "A batch of texts",
        "value": {
            "texts": [
                "Absolutely loved it, would buy again!",
                "It arrived on Tuesday.",
                "Worst purchase I have ever made :(",
            ]
        },
    },
}

HIDDEN_STATES_EXAMPLES: dict[str, dict[str, Any]] = {
    "last_layer": {
        "summary": "Last layer, rounded",
        "value": {"text": "not bad at all", "decimals": 4},
    },
    "everything": {
        "summary": "All layers with LSTM cell states",
        "value": {
            "text": "I didn't like the ending.",
            "layers": "all",
            "include_cell_state": True,
            "decimals": 3,
        },
    },
    "gates_top_k": {
        "summary": "Gates of the 8 most active units, rounded",
        "value": {
            "text": "The plot was thin, the acting superb.",
            "include_gates": True,
            "top_k": 8,
            "decimals": 3,
        },
    },
    "units": {
        "summary": "Chosen hidden units only",
        "value": {"text": "not bad at all", "units": [0, 5, 17], "decimals": 4},
    },
}


class PredictRequest(BaseModel):
    """Exactly one of `text` (one prediction) or `texts` (a batch, answered in order)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [example["value"] for example in PREDICT_EXAMPLES.values()]},
    )

    text: Text | None = None
    texts: list[Text] | None = Field(None, min_length=1, description="Texts, answered in order.")

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise PydanticCustomError(
                "text_or_texts", "send exactly one of 'text' (a string) or 'texts' (a list)"
            )
        return self


class HiddenStatesRequest(BaseModel):
    """One text to trace through the network step by step."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [example["value"] for example in HIDDEN_STATES_EXAMPLES.values()]
        },
    )

    text: Text
    layers: Literal["last", "all"] = Field(
        "last", description="'last': the last recurrent layer only; 'all': every layer."
    )
    include_cell_state: bool = Field(
        False, description="Add LSTM cell states (`cell`); ignored for RNN and GRU models."
    )
    decimals: int | None = Field(
        None, ge=0, le=8, description="Round every number to this many decimals (smaller body)."
    )
    include_gates: bool = Field(
        False,
        description=(
            "Add each layer's gate activations (`gates`): LSTM input, forget, output (sigmoids, "
            "in [0, 1]) and candidate (tanh, in [-1, 1]); GRU reset and update (sigmoids). "
            "The plain RNN has no gates."
        ),
    )
    units: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="Only these hidden units (indices below hidden_size), in this order.",
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description=(
            "Only the k most active hidden units of each layer and direction (largest mean "
            "|h_t| over the tokens); at most hidden_size."
        ),
    )

    @model_validator(mode="after")
    def _units_or_top_k(self) -> HiddenStatesRequest:
        if self.units is not None and self.top_k is not None:
            raise PydanticCustomError("units_or_top_k", "send at most one of 'units' or 'top_k'")
        if self.units is not None and len(set(self.units)) != len(self.units):
            raise PydanticCustomError("duplicate_units", "'units' lists a unit more than once")
        return self


# ---------------------------------------------------------------------------------------------
# Responses


class ModelRef(BaseModel):
    """Which model answered: its name and version (a prefix of the checkpoint's sha256)."""

    name: str
    version: str


class Prediction(BaseModel):
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Probability of `label`.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")


_PREDICTION_EXAMPLE: dict[str, Any] = {
    "label": "positive",
    "score": 0.9123,
    "probabilities": {"negative": 0.0311, "neutral": 0.0566, "positive": 0.9123},
}
_MODEL_EXAMPLE: dict[str, Any] = {"name": "default", "version": "3f2a9c1b7d4e"}


class PredictResponse(Prediction):
    """The prediction for one text."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_PREDICTION_EXAMPLE, "model": _MODEL_EXAMPLE}]}
    )

    model: ModelRef


class BatchPredictResponse(BaseModel):
    """Predictions for a batch, in the order of `texts`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"predictions": [_PREDICTION_EXAMPLE], "model": _MODEL_EXAMPLE}]
        }
    )

    predictions: list[Prediction]
    model: ModelRef


class TokenInfo(BaseModel):
    text: str = Field(description="The token exactly as written: `text[start:end]`.")
    start: int = Field(description="Offset of its first character (Unicode code points).")
    end: int = Field(description="Offset just past its last character.")
    id: int = Field(description="Vocabulary id (1 is the unknown-word id).")
    oov: bool = Field(description="True when the word is not in the vocabulary.")


class LayerStates(BaseModel):
    layer: int = Field(description="Recurrent layer, 0 first.")
    direction: Literal["forward", "backward"]
    hidden: list[list[float]] = Field(description="Hidden state after each token: [T][H].")
    cell: list[list[float]] | None = Field(
        None, description="LSTM cell state after each token: [T][H] (on request)."
    )
    gates: dict[str, list[list[float]]] | None = Field(
        None,
        description=(
            "Gate activations after each token, by gate name: [T][H] (on request; "
            "absent for the plain RNN)."
        ),
    )
    units: list[int] | None = Field(
        None,
        description="The hidden units in `hidden`, `cell` and `gates`, when not all of them.",
    )
    norm: list[float] = Field(
        default_factory=list, description="L2 norm of the hidden state after each token: [T]."
    )
    saturated: list[float] = Field(
        default_factory=list,
        description="Share of hidden units with |h| > `saturation_threshold` after each token.",
    )


class Step(BaseModel):
    """The prediction if the text ended at this token."""

    label: str
    probabilities: dict[str, float]


class HiddenStatesResponse(BaseModel):
    """The text's tokens, the network's states after each, and what it predicts."""

    tokens: list[TokenInfo]
    layers: list[LayerStates]
    steps: list[Step] = Field(
        description="steps[t]: the head applied to h_t. Empty for a bidirectional model."
    )
    steps_note: str | None = Field(None, description="Why `steps` is empty, when it is.")
    flips: list[int] = Field(
        default_factory=list,
        description="Token positions t where steps[t] has another label than steps[t - 1].",
    )
    saturation_threshold: float = Field(
        description="|h| above which a unit counts as saturated in `saturated`."
    )
    prediction: Prediction
    model: ModelRef


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef


class ReloadResponse(BaseModel):
    """What POST /admin/reload did in the worker that answered."""

    status: Literal["reloaded", "unchanged"] = Field(
        description="reloaded: the new checkpoint is served from now on; unchanged: the "
        "checkpoint at APP_MODEL_DIR is the one already served."
    )
    model: ModelRef = Field(description="The model served now.")
    previous: ModelRef = Field(description="The model served before.")
    seconds: float = Field(description="Time to load, verify and warm up the checkpoint.")
    other_workers_signalled: bool = Field(
        description="With WORKERS > 1: the other worker processes were told to reload too "
        "(each does it on its own, in the background, and logs the outcome)."
    )


class Architecture(BaseModel):
    cell: str
    embedding_dim: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    dropout: float
    parameters: int = Field(description="Number of weights.")


class Limits(BaseModel):
    """The request limits this service enforces."""

    max_text_chars: int
    max_tokens: int
    max_texts: int
    max_body_bytes: int
    max_hidden_state_tokens: int
    max_response_bytes: int
    max_explain_tokens: int
    max_ig_steps: int


class VocabularyInfo(BaseModel):
    """How much of the language the model knows (figures from training, where recorded)."""

    size: int = Field(description="Entries, special tokens included.")
    pretrained_rows: int | None = Field(
        description="Entries whose embedding came from the pretrained table."
    )
    test_tokens: int | None = Field(description="Tokens in the held-out test split.")
    test_tokens_unknown: int | None = Field(
        description="Test-split tokens the vocabulary does not know (read as <unk>)."
    )
    test_coverage: float | None = Field(
        description="Share of test-split tokens the vocabulary knows: 1 - unknown / tokens."
    )


class InferenceInfo(BaseModel):
    """How this server computes, after any fallback at load (`APP_INFERENCE_DTYPE`)."""

    predict_dtype: Literal["bfloat16", "float32", "float64"] = Field(
        description="The dtype of /predict's batched pass (also /hidden-states' `prediction`)."
    )
    state_dtype: Literal["float32", "float64"] = Field(
        description="The dtype of /hidden-states' states and steps, /stream and /explain."
    )
    stream_tolerance: float = Field(
        description=(
            "How far a probability from /stream (or a /hidden-states step) may be from "
            "/predict's for the same text: float rounding in float32 or float64, wider when "
            "/predict runs in bfloat16."
        )
    )


class ModelCardResponse(BaseModel):
    """What is being served: architecture, labels, vocabulary, metrics, provenance."""

    name: str
    version: str
    sha256: str = Field(description="sha256 of the checkpoint's manifest, which pins every file.")
    labels: list[str]
    vocab_size: int
    vocabulary: VocabularyInfo
    architecture: Architecture
    metrics: dict[str, Any] | None = Field(description="Held-out metrics from the model card.")
    card: dict[str, Any] = Field(description="The checkpoint's model card as written by training.")
    limits: Limits
    inference: InferenceInfo


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. ['body', 'texts', 2].")
    msg: str
    type: str = Field(description="Stable machine-readable kind, e.g. 'too_many_tokens'.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'validation_error'.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The shape of every non-2xx response."""

    error: ErrorBody
    request_id: str | None = Field(description="Also sent as the X-Request-ID header.")


# ---------------------------------------------------------------------------------------------
# The hidden-state explorer: /tokenize and /explain

TOKENIZE_EXAMPLES: dict[str, dict[str, Any]] = {
    "review": {
        "summary": "A review with a negation and an elongated word",
        "value": {"text": "The battery isn't great, but the screen is soooo good :)"},
    },
    "tweet": {
        "summary": "A tweet with a mention, a hashtag and a link",
        "value": {"text": "@shop loved it!!! #happy https://example.com/p/1"},
    },
}

EXPLAIN_EXAMPLES: dict[str, dict[str, Any]] = {
    "predicted": {
        "summary": "Why the predicted label (both methods)",
        "value": {"text": "The food was great but the service was painfully slow.", "decimals": 4},
    },
    "requested": {
        "summary": "Toward a chosen label, integrated gradients only",
        "value": {
            "text": "Not bad at all.",
            "label": "positive",
            "methods": ["integrated_gradients"],
            "steps": 64,
            "baseline": "unk",
        },
    },
    "occlusion_drop": {
        "summary": "Occlusion by dropping each token",
        "value": {"text": "I wanted to love it.", "methods": ["occlusion"], "occlusion": "drop"},
    },
}


class TokenizeRequest(BaseModel):
    """One text to split into the tokens the model reads."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [example["value"] for example in TOKENIZE_EXAMPLES.values()]
        },
    )

    text: Text


class TokenizedToken(TokenInfo):
    norm: str = Field(description="The normalised form looked up in the vocabulary.")


class TokenizeResponse(BaseModel):
    """The text's tokens as the model reads them, and how many it knows."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tokens": [
                        {
                            "text": "Sooo",
                            "start": 0,
                            "end": 4,
                            "id": 97,
                            "oov": False,
                            "norm": "sooo",
                        },
                        {
                            "text": "zyxxy",
                            "start": 5,
                            "end": 10,
                            "id": 1,
                            "oov": True,
                            "norm": "zyxxy",
                        },
                    ],
                    "count": 2,
                    "oov_count": 1,
                    "model": _MODEL_EXAMPLE,
                }
            ]
        }
    )

    tokens: list[TokenizedToken]
    count: int = Field(description="Number of tokens (compare with the limits in GET /model).")
    oov_count: int = Field(description="Tokens not in the vocabulary (read as <unk>).")
    model: ModelRef


Method = Literal["integrated_gradients", "occlusion"]


class ExplainRequest(BaseModel):
    """One text whose prediction to attribute to its tokens."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [example["value"] for example in EXPLAIN_EXAMPLES.values()]},
    )

    text: Text
    label: str | None = Field(
        None, description="The label to explain (one of GET /model's labels); default: predicted."
    )
    methods: list[Method] = Field(
        ["integrated_gradients", "occlusion"], min_length=1, max_length=2, description="Methods."
    )
    steps: int | None = Field(
        None,
        ge=1,
        description=(
            "Integrated gradients: quadrature nodes on the path (cost grows with them); "
            "default 50, or APP_MAX_IG_STEPS when that is lower."
        ),
    )
    baseline: Literal["pad", "unk", "zero"] = Field(
        "pad",
        description=(
            "Integrated gradients: the text it starts from, of the same length, every token's "
            "embedding replaced by the <pad> row, the <unk> row, or zeros."
        ),
    )
    occlusion: Literal["unk", "drop"] = Field(
        "unk", description="Occlusion: replace each token by <unk>, or drop it from the text."
    )
    decimals: int | None = Field(None, ge=0, le=8, description="Round every number.")

    @model_validator(mode="after")
    def _distinct_methods(self) -> ExplainRequest:
        if len(set(self.methods)) != len(self.methods):
            raise PydanticCustomError("duplicate_methods", "'methods' lists a method twice")
        return self


class IntegratedGradientsResult(BaseModel):
    """Integrated gradients on the embeddings, toward the label's logit."""

    attributions: list[float] = Field(
        description="Per token; they add up to logit - baseline_logit (up to `delta`)."
    )
    baseline: Literal["pad", "unk", "zero"]
    steps: int
    quadrature: Literal["gauss_legendre"] = Field(
        description="How the path integral is taken: Gauss-Legendre nodes on [0, 1]."
    )
    logit: float = Field(description="The label's logit for the text, F(x).")
    baseline_logit: float = Field(description="The label's logit for the baseline, F(b).")
    delta: float = Field(
        description="Convergence: sum(attributions) - (logit - baseline_logit); near 0 is good."
    )


class OcclusionResult(BaseModel):
    """Leave-one-out: what the label loses when a token is occluded."""

    replacement: Literal["unk", "drop"]
    attributions: list[float] = Field(
        description="Per token: logit(text) - logit(text with the token occluded)."
    )
    probability_changes: list[float] = Field(
        description="Per token: p(label | text) - p(label | text with the token occluded)."
    )


class ExplainResponse(BaseModel):
    """Per-token attributions toward one label, by each method asked for."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "tokens": [
                        {"text": "not", "start": 0, "end": 3, "id": 19, "oov": False},
                        {"text": "bad", "start": 4, "end": 7, "id": 211, "oov": False},
                    ],
                    "label": "positive",
                    "prediction": _PREDICTION_EXAMPLE,
                    "integrated_gradients": {
                        "attributions": [0.8123, 0.4411],
                        "baseline": "pad",
                        "steps": 50,
                        "quadrature": "gauss_legendre",
                        "logit": 1.2034,
                        "baseline_logit": -0.05,
                        "delta": 0.0,
                    },
                    "occlusion": {
                        "replacement": "unk",
                        "attributions": [0.9312, 0.2208],
                        "probability_changes": [0.4211, 0.0813],
                    },
                    "model": _MODEL_EXAMPLE,
                }
            ]
        }
    )

    tokens: list[TokenInfo]
    label: str = Field(description="The label explained.")
    prediction: Prediction
    integrated_gradients: IntegratedGradientsResult | None = None
    occlusion: OcclusionResult | None = None
    model: ModelRef


# ---------------------------------------------------------------------------------------------
# Streaming: /stream and /stream/ws

_STATE_EXAMPLE = "AQAd7pNc4M0ZS2dWAAAAAAA..."

STREAM_EXAMPLES: dict[str, dict[str, Any]] = {
    "start": {
        "summary": "Start a stream (the text may end mid-word)",
        "value": {"text": "The food was gre", "state": None},
    },
    "continue": {
        "summary": "Continue it with the state from the previous response",
        "value": {"text": "at but the serv", "state": _STATE_EXAMPLE},
    },
    "finish": {
        "summary": "End it: the unfinished word is read too",
        "value": {"text": "ice was slow.", "state": _STATE_EXAMPLE, "final": True},
    },
}


def _valid_unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "invalid_unicode",
            "text contains a lone surrogate code point: cut pieces between code points",
        ) from None
    return value


class StreamRequest(BaseModel):
    """The next piece of a text, and the state the previous piece's response returned."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [example["value"] for example in STREAM_EXAMPLES.values()]},
    )

    text: Annotated[str, AfterValidator(_valid_unicode)] = Field(
        "",
        description=(
            "The next piece of the text, cut anywhere between code points (mid-word too); "
            "may be empty or whitespace."
        ),
    )
    state: str | None = Field(
        None,
        description="`state` from the previous response; null or absent starts a new stream.",
    )
    final: bool = Field(
        False,
        description=(
            "This is the last piece: the unfinished word at the end is read too, and the "
            "stream ends (its state cannot be continued)."
        ),
    )


class StreamResponse(BaseModel):
    """What the piece added, the prediction so far, and the state to send with the next one."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "state": _STATE_EXAMPLE,
                    "position": 31,
                    "token_count": 6,
                    "tokens": [
                        {"text": "great", "start": 13, "end": 18, "id": 84, "oov": False},
                        {"text": "but", "start": 19, "end": 22, "id": 31, "oov": False},
                        {"text": "the", "start": 23, "end": 26, "id": 2, "oov": False},
                    ],
                    "steps": [
                        {"label": "positive", "probabilities": _PREDICTION_EXAMPLE["probabilities"]}
                    ]
                    * 3,
                    "pending": [{"text": "serv", "start": 27, "end": 31, "id": 1, "oov": True}],
                    "pending_steps": [
                        {"label": "positive", "probabilities": _PREDICTION_EXAMPLE["probabilities"]}
                    ],
                    "prediction": _PREDICTION_EXAMPLE,
                    "final": False,
                    "model": _MODEL_EXAMPLE,
                }
            ]
        }
    )

    state: str = Field(description="Opaque, signed; send it with the next piece.")
    position: int = Field(description="Characters received so far (Unicode code points).")
    token_count: int = Field(description="Tokens read for good so far (`tokens` included).")
    tokens: list[TokenInfo] = Field(
        description=(
            "Tokens this piece made final, with offsets counted from the stream's start "
            "(code points, not UTF-16 units)."
        )
    )
    steps: list[Step] = Field(
        description="steps[i]: the prediction if the text ended at tokens[i]."
    )
    pending: list[TokenInfo] = Field(
        description=(
            "Tokens of the text after the last whitespace, as they read if the text ended "
            "here; the next piece may change them. Empty once final."
        )
    )
    pending_steps: list[Step] = Field(description="pending_steps[i]: as `steps`, for pending[i].")
    prediction: Prediction | None = Field(
        description=(
            "The prediction for the text so far, as if it ended here (equal to /predict of that "
            "text); null until the stream holds a token."
        )
    )
    final: bool = Field(description="True when this piece ended the stream.")
    model: ModelRef
