"""GET /model: the model card of the checkpoint being served."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


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


Dtype = Literal["bfloat16", "float32", "float64"]


class EndpointDtypes(BaseModel):
    """The dtype each endpoint computes its answer in: the endpoints do not all share one pass,
    so their probabilities for the same text agree to float rounding only."""

    predict: Dtype = Field(description="/predict's batched pass.")
    hidden_states: Dtype = Field(
        description=(
            "/hidden-states' step-by-step trace: its states, steps and `prediction` (the last "
            "step) all come from it."
        )
    )
    explain: Dtype = Field(
        description=(
            "/explain's attributions (integrated gradients and occlusion); its `prediction` is "
            "/predict's."
        )
    )
    stream: Dtype = Field(description="/stream's reading of the text and its state.")


class InferenceInfo(BaseModel):
    """How this server computes, after any fallback at load (`APP_INFERENCE_DTYPE`)."""

    predict_dtype: Dtype = Field(description="The dtype of /predict's batched pass.")
    state_dtype: Literal["float32", "float64"] = Field(
        description="The dtype of /hidden-states (states, steps and prediction) and /stream."
    )
    stream_tolerance: float = Field(
        description=(
            "How far a probability from /stream (or a /hidden-states step) may be from "
            "/predict's for the same text: float rounding in float32 or float64, wider when "
            "/predict runs in bfloat16."
        )
    )
    dtypes: EndpointDtypes = Field(
        description="Per endpoint, the dtype it computes in (the fields above, spelled out)."
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
