"""POST /hidden-states: how the network read a text, token by token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from app.api.deps import InferenceRuntimeDep
from app.errors import error_responses
from app.schemas import (
    HIDDEN_STATES_EXAMPLES,
    HiddenStatesRequest,
    HiddenStatesResponse,
    LayerStates,
    Prediction,
    Step,
    TokenInfo,
)

router = APIRouter(tags=["inference"])


@router.post(
    "/hidden-states",
    responses=error_responses(400, 401, 413, 415, 422, 503),
    response_model_exclude_none=True,
)
async def hidden_states(
    body: Annotated[HiddenStatesRequest, Body(openapi_examples=HIDDEN_STATES_EXAMPLES)],
    runtime: InferenceRuntimeDep,
) -> HiddenStatesResponse:
    """Tokens with offsets, per-token hidden states and predictions, and the final prediction."""
    encoded, states = await runtime.trace(
        body.text,
        all_layers=body.layers == "all",
        include_cell=body.include_cell_state,
        decimals=body.decimals,
    )
    unk = runtime.predictor.vocab.unk_id
    prediction = states.prediction
    return HiddenStatesResponse.model_construct(
        tokens=[
            TokenInfo.model_construct(
                text=token.text, start=token.start, end=token.end, id=id_, oov=id_ == unk
            )
            for token, id_ in zip(encoded.tokens, encoded.ids, strict=True)
        ],
        layers=[
            LayerStates.model_construct(
                layer=layer.layer, direction=layer.direction, hidden=layer.hidden, cell=layer.cell
            )
            for layer in states.layers
        ],
        steps=[
            Step.model_construct(label=label, probabilities=probabilities)
            for label, probabilities in states.steps
        ],
        steps_note=states.steps_note,
        prediction=Prediction.model_construct(
            label=prediction.label, score=prediction.score, probabilities=prediction.probabilities
        ),
        model=runtime.model,
    )
