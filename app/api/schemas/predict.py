"""POST /predict: one text or a batch in, a prediction for each out."""

from __future__ import annotations

from typing import Annotated, ClassVar

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

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if (self.text is None) == (self.texts is None):
            raise PydanticCustomError(
                "text_or_texts", "send exactly one of 'text' (a string) or 'texts' (a list)"
            )
        return self


class PredictResponse(Prediction):
    """The prediction for one text."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.PREDICT_RESPONSE]})

    model: ModelRef


class BatchPredictResponse(BaseModel):
    """Predictions for a batch, in the order of `texts`."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.BATCH_PREDICT_RESPONSE]})

    predictions: list[Prediction]
    model: ModelRef
