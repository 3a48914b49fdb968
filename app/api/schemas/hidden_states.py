"""POST /hidden-states: one text traced through the network, token by token."""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from app.api.schemas import examples
from app.api.schemas.common import ModelName, ModelRef, Prediction, Step, Text, TokenInfo

# What an ordinary request gets: enough to read the network's behaviour, a few kilobytes for a
# paragraph instead of every unit's float32 state (see `full` for those).
DEFAULT_TOP_K = 16
DEFAULT_DECIMALS = 4


class Selection(NamedTuple):
    """What a request asks for once its defaults are applied."""

    units: list[int] | None  # these units, in this order
    top_k: int | None  # else the k most active ones (at most hidden_size); None: every unit
    decimals: int | None  # None: float32 precision


class HiddenStatesRequest(BaseModel):
    """One text to trace through the network step by step."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": examples.values(examples.HIDDEN_STATES_EXAMPLES)},
    )

    text: Text
    model: ModelName | None = None
    layers: Literal["last", "all"] = Field(
        "last", description="'last': the last recurrent layer only; 'all': every layer."
    )
    include_cell_state: bool = Field(
        False, description="Add LSTM cell states (`cell`); ignored for RNN and GRU models."
    )
    decimals: int | None = Field(
        None,
        ge=0,
        le=8,
        description=(
            f"Round every number to this many decimals. Default: {DEFAULT_DECIMALS}, or no "
            "rounding (float32 precision) with `full`."
        ),
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
        description=(
            "Only these hidden units (indices below hidden_size), in this order. At most one "
            "of `units` and `top_k`; with neither, see `top_k` for the default."
        ),
    )
    top_k: int | None = Field(
        None,
        ge=1,
        description=(
            "Only the k most active hidden units of each layer and direction (largest mean "
            "|h_t| over the tokens); at most hidden_size. Default, when neither `units` nor "
            f"`full` is sent: {DEFAULT_TOP_K} (every unit for a model with {DEFAULT_TOP_K} or "
            "fewer), and each layer's `units` lists the ones shown."
        ),
    )
    full: bool = Field(
        False,
        description=(
            "Every hidden unit at full precision (float32), instead of the defaults of "
            f"{DEFAULT_TOP_K} units and {DEFAULT_DECIMALS} decimals: the largest answer. An "
            "explicit `decimals`, `units` or `top_k` still wins over it (e.g. every unit to 3 "
            "decimals: `full` and `decimals: 3`); sent with both `decimals` and `units` or "
            "`top_k`, it would change nothing and is refused (422 `full_overridden`)."
        ),
    )

    @model_validator(mode="after")
    def _units_or_top_k(self) -> HiddenStatesRequest:
        if self.units is not None and self.top_k is not None:
            raise PydanticCustomError("units_or_top_k", "send at most one of 'units' or 'top_k'")
        if self.units is not None and len(set(self.units)) != len(self.units):
            raise PydanticCustomError("duplicate_units", "'units' lists a unit more than once")
        chosen = self.units is not None or self.top_k is not None
        if self.full and self.decimals is not None and chosen:
            raise PydanticCustomError(
                "full_overridden",
                "'full' asks for every unit at full precision, but 'decimals' and "
                "'units' or 'top_k' override both: drop 'full', or one of the others",
            )
        return self

    def selection(self, hidden_size: int) -> Selection:
        """The units and rounding to answer with, defaults applied (see the fields)."""
        decimals = self.decimals
        if decimals is None and not self.full:
            decimals = DEFAULT_DECIMALS
        if self.units is not None:
            return Selection(self.units, None, decimals)
        if self.top_k is not None:
            return Selection(None, min(self.top_k, hidden_size), decimals)
        if self.full or hidden_size <= DEFAULT_TOP_K:
            return Selection(None, None, decimals)
        return Selection(None, DEFAULT_TOP_K, decimals)


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
        description=(
            "The hidden units in `hidden`, `cell` and `gates` (columns in this order), when "
            "not all of them: the others were left out. Absent: every unit, in index order."
        ),
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
    hidden_size: int = Field(
        description="Hidden units per layer and direction; a layer's `units` says which it shows."
    )
    decimals: int | None = Field(
        None, description="Numbers are rounded to this many decimals; absent: float32 precision."
    )
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
