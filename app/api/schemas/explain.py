"""POST /explain: per-token attributions toward one label."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas import examples
from app.api.schemas.bounds import settings_bound
from app.api.schemas.common import ModelName, ModelRef, Prediction, Text, TokenInfo

Method = Literal["integrated_gradients", "occlusion"]
# At most APP_MAX_IG_STEPS (see app.api.schemas.bounds).
Steps = Annotated[int, Field(ge=1, json_schema_extra=settings_bound(maximum="max_ig_steps"))]


class ExplainRequest(BaseModel):
    """One text whose prediction to attribute to its tokens."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.values(examples.EXPLAIN_EXAMPLES)},
    )

    text: Text
    model: ModelName | None = None
    label: str | None = Field(
        None, description="The label to explain (one of GET /model's labels); default: predicted."
    )
    methods: list[Method] = Field(
        ["integrated_gradients", "occlusion"], min_length=1, max_length=2, description="Methods."
    )
    steps: Steps | None = Field(
        None,
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

    model_config = ConfigDict(json_schema_extra={"examples": [examples.EXPLAIN_RESPONSE]})

    tokens: list[TokenInfo]
    label: str = Field(description="The label explained.")
    prediction: Prediction
    integrated_gradients: IntegratedGradientsResult | None = None
    occlusion: OcclusionResult | None = None
    model: ModelRef
