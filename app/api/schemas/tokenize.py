"""POST /tokenize: the tokens the model reads in a text."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.api.schemas import examples
from app.api.schemas.common import ModelName, ModelRef, Text, TokenInfo


class TokenizeRequest(BaseModel):
    """One text to split into the tokens the model reads."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.values(examples.TOKENIZE_EXAMPLES)},
    )

    text: Text
    model: ModelName | None = None


class TokenizedToken(TokenInfo):
    norm: str = Field(description="The normalised form looked up in the vocabulary.")


class TokenizeResponse(BaseModel):
    """The text's tokens as the model reads them, and how many it knows."""

    model_config = ConfigDict(json_schema_extra={"examples": [examples.TOKENIZE_RESPONSE]})

    tokens: list[TokenizedToken]
    count: int = Field(description="Number of tokens (compare with the limits in GET /model).")
    oov_count: int = Field(description="Tokens not in the vocabulary (read as <unk>).")
    model: ModelRef
