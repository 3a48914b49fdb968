"""POST /hidden-states: one text traced through the network, token by token."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas import examples
from app.api.schemas.common import ModelRef, Prediction, Step, Text, TokenInfo


class HiddenStatesRequest(BaseModel):
    """One text to trace through the network step by step."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.values(examples.HIDDEN_STATES_EXAMPLES)},
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
    prediction: Prediction = Field(
        description=(
            "The trace's own final step: equal to the last of `steps` (for a bidirectional "
            "model, the head on the final states). /predict's for the same text to within "
            "GET /model's `inference.stream_tolerance`."
        )
    )
    model: ModelRef
