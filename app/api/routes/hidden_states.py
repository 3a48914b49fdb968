"""POST /hidden-states: how the network read a text, token by token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_responses
from app.api.responses import layer_states_of, model_ref, prediction_of, steps_of, token_infos
from app.api.schemas.examples import HIDDEN_STATES_EXAMPLES
from app.api.schemas.hidden_states import HiddenStatesRequest, HiddenStatesResponse
from app.core.errors import InvalidInputError
from app.inference.results import SATURATION_THRESHOLD
from app.inference.runtime import Runtime

router = APIRouter(tags=["inference"])


@router.post(
    "/hidden-states",
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    response_model=HiddenStatesResponse,
    response_model_exclude_none=True,
)
async def hidden_states(
    body: Annotated[HiddenStatesRequest, Body(openapi_examples=HIDDEN_STATES_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> Response:
    """Tokens with offsets, per-token hidden states, gates and predictions, and the prediction.

    By default the answer is sized for reading: the 16 most active units of each layer, to 4
    decimals (each layer's `units` names the ones shown). `full` asks for every unit at float32
    precision; `units`, `top_k` and `decimals` choose exactly.

    The whole answer comes from one pass, the step-by-step trace in the state dtype (GET
    /model: `inference.dtypes.hidden_states`): `prediction` is that trace's final step, equal
    to the last of `steps`. It agrees with /predict for the same text to within
    `inference.stream_tolerance`, not exactly, when /predict's batched pass runs in another
    dtype.
    """
    with serving_for(request, runtime, body.model) as serving:
        return await _hidden_states(body, serving.runtime)


async def _hidden_states(body: HiddenStatesRequest, runtime: Runtime) -> Response:
    hidden_size = runtime.predictor.model.config.hidden_size
    if body.units is not None:
        outside = [
            {
                "loc": ["body", "units", index],
                "msg": f"unit {unit} does not exist; the model has units 0-{hidden_size - 1}",
                "type": "unit_out_of_range",
            }
            for index, unit in enumerate(body.units)
            if unit >= hidden_size
        ]
        if outside:
            raise InvalidInputError(outside)
    chosen = body.selection(hidden_size)
    encoded, states = await runtime.trace(
        body.text,
        all_layers=body.layers == "all",
        include_cell=body.include_cell_state,
        decimals=chosen.decimals,
        include_gates=body.include_gates,
        units=chosen.units,
        top_k=chosen.top_k,
    )
    unk = runtime.predictor.vocab.unk_id
    response = HiddenStatesResponse.model_construct(
        tokens=token_infos(encoded.tokens, encoded.ids, unk),
        hidden_size=hidden_size,
        decimals=chosen.decimals,
        layers=[layer_states_of(layer) for layer in states.layers],
        steps=steps_of(states.steps),
        steps_note=states.steps_note,
        flips=states.flips,
        saturation_threshold=SATURATION_THRESHOLD,
        prediction=prediction_of(states.prediction),
        model=model_ref(runtime.model),
    )
    content = response.model_dump_json(exclude_none=True).encode()
    limit = runtime.settings.max_response_bytes
    if len(content) > limit:
        raise InvalidInputError(
            [
                {
                    "loc": ["body"],
                    "msg": (
                        f"the response would be {len(content)} bytes; the limit is {limit} "
                        "(APP_MAX_RESPONSE_BYTES): ask for fewer units ('units' or 'top_k', "
                        "not 'full'), fewer 'decimals', the last layer only, or no gates or "
                        "cell states"
                    ),
                    "type": "response_too_large",
                }
            ]
        )
    return Response(content, media_type="application/json")
