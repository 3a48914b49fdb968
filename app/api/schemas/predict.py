"""POST /predict: one text or a batch in, a prediction for each out."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas import examples
from app.api.schemas.bounds import settings_bound
from app.api.schemas.common import ModelName, ModelRef, Prediction, Text

# At most APP_MAX_TEXTS of them (see app.api.schemas.bounds).
Texts = Annotated[
    list[Text], Field(min_length=1, json_schema_extra=settings_bound(maxItems="max_texts"))
]


class PredictRequest(BaseModel):
    """Exactly one of `text` (one prediction) or `texts` (a batch, answered in order)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.values(examples.PREDICT_EXAMPLES)},
    )

    # Exactly one of these is sent: error messages sketch the body from them
    # (app.http.errors.expected_body).
    alternatives: ClassVar[tuple[str, ...]] = ("text", "texts")

    text: Text | None = None
    texts: Texts | None = Field(None, description="Texts, answered in order.")
    model: ModelName | None = None
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=(
            "Mark each prediction `confident`: whether its `score` is at least this; omitted: "
            "the APP_MIN_CONFIDENCE setting, and without one `confident` is null."
        ),
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise PydanticCustomError(
                "text_or_texts", "send exactly one of 'text' (a string) or 'texts' (a list)"
            )
        return self


# The codes of `warnings` (app.inference.results.WARNING_CODES; docs/api/predict.md has the rules).
WarningCode = Literal["truncated", "mostly_unknown_words", "very_short", "low_confidence"]


class TextPrediction(Prediction):
    """A /predict prediction, with what its text says about how far to trust it."""

    oov_ratio: float = Field(
        description="Share of the text's tokens the vocabulary does not know (0 to 1)."
    )
    token_count: int = Field(description="Tokens the model read.")
    truncated: bool = Field(
        description="The text has more tokens than the model's training texts were cut to."
    )
    warnings: list[WarningCode] = Field(
        description="Stable codes of what makes this prediction less reliable, possibly none."
    )
    confident: bool | None = Field(
        description=(
            "Whether `score` is at least the min_confidence in effect (the request's, else "
            "APP_MIN_CONFIDENCE); null when neither is set."
        ),
    )


class PredictResponse(TextPrediction):
    """The prediction for one text."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.PREDICT_RESPONSE]})

    model: ModelRef


class BatchPredictResponse(BaseModel):
    """Predictions for a batch, in the order of `texts`."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.BATCH_PREDICT_RESPONSE]})

    predictions: list[TextPrediction]
    model: ModelRef
