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
    prediction: Prediction
    model: ModelRef


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef


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


class ModelCardResponse(BaseModel):
    """What is being served: architecture, labels, vocabulary, metrics, provenance."""

    name: str
    version: str
    sha256: str = Field(description="sha256 of the checkpoint's manifest, which pins every file.")
    labels: list[str]
    vocab_size: int
    architecture: Architecture
    metrics: dict[str, Any] | None = Field(description="Held-out metrics from the model card.")
    card: dict[str, Any] = Field(description="The checkpoint's model card as written by training.")
    limits: Limits


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
