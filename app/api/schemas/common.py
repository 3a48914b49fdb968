"""Pieces of the contract several routes share: the text a request sends, which model
answered, a prediction, a token, a per-token step, and the one error shape."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError

from app.api.schemas.bounds import settings_bound


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


# Its character limit is a setting (see app.api.schemas.bounds).
Text = Annotated[
    str,
    AfterValidator(_readable_text),
    Field(
        description="Text to classify: any Unicode, at least one non-whitespace character.",
        json_schema_extra=settings_bound(maxLength="max_text_chars"),
    ),
]


# A model of the store, by name; none: the default model (GET /models lists them).
ModelName = Annotated[
    str,
    Field(
        max_length=64,
        description=(
            "Which model answers, by name (GET /models); omitted: the default model (or the "
            "canary candidate, for the share APP_CANARY gives it)."
        ),
    ),
]


class ModelRef(BaseModel):
    """Which model answered: its name and version (a prefix of the checkpoint's sha256)."""

    name: str
    version: str


class Prediction(BaseModel):
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Probability of `label`.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")


class TokenInfo(BaseModel):
    text: str = Field(description="The token exactly as written: `text[start:end]`.")
    start: int = Field(description="Offset of its first character (Unicode code points).")
    end: int = Field(description="Offset just past its last character.")
    id: int = Field(description="Vocabulary id (1 is the unknown-word id).")
    oov: bool = Field(description="True when the word is not in the vocabulary.")


class Step(BaseModel):
    """The prediction if the text ended at this token."""

    label: str
    probabilities: dict[str, float]


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(description="Where: e.g. ['body', 'texts', 2].")
    msg: str
    type: str = Field(description="Stable machine-readable kind, e.g. 'too_many_tokens'.")
    url: str | None = Field(
        None, description="A page that helps, when there is one: the API reference for a 404."
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. 'validation_error'.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The shape of every non-2xx response."""

    error: ErrorBody
    request_id: str | None = Field(description="Also sent as the X-Request-ID header.")
