"""POST /stream and the /stream/ws WebSocket: a text read piece by piece."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from app.api.schemas import examples
from app.api.schemas.bounds import settings_bound
from app.api.schemas.common import ModelName, ModelRef, Prediction, Step, TokenInfo


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
        json_schema_extra={"examples": examples.values(examples.STREAM_EXAMPLES)},
    )

    text: Annotated[str, AfterValidator(_valid_unicode)] = Field(
        "",
        description=(
            "The next piece of the text, cut anywhere between code points (mid-word too); "
            "may be empty or whitespace."
        ),
        json_schema_extra=settings_bound(maxLength="stream_max_chunk_chars"),
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
    model: ModelName | None = Field(
        None,
        description=(
            "Which model reads the stream (GET /models); omitted: the default. A state is "
            "bound to the model that made it: send every piece of a stream to that model."
        ),
    )


class StreamResponse(BaseModel):
    """What the piece added, the prediction so far, and the state to send with the next one."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.STREAM_RESPONSE]})

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
