"""POST /explain: which tokens pushed the model toward a label (see app/inference/explain.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_responses
from app.api.responses import (
    integrated_gradients_of,
    model_ref,
    occlusion_of,
    prediction_of,
    token_infos,
)
from app.api.schemas.examples import EXPLAIN_EXAMPLES
from app.api.schemas.explain import ExplainRequest, ExplainResponse
from app.core.errors import InvalidInputError
from app.inference.runtime import Runtime

router = APIRouter(tags=["explorer"])

DEFAULT_STEPS = 50  # integrated gradients' quadrature nodes when the request names none


@router.post(
    "/explain",
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    response_model_exclude_none=True,
)
async def explain(
    body: Annotated[ExplainRequest, Body(openapi_examples=EXPLAIN_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> ExplainResponse:
    """Per-token attributions: integrated gradients on the embeddings, and occlusion."""
    with serving_for(request, runtime, body.model) as serving:
        return await _explain(body, serving.runtime)


async def _explain(body: ExplainRequest, runtime: Runtime) -> ExplainResponse:
    labels = runtime.predictor.labels
    problems = []
    if body.label is not None and body.label not in labels:
        problems.append(
            {
                "loc": ["body", "label"],
                "msg": f"unknown label {body.label!r}; the model's labels are {list(labels)}",
                "type": "unknown_label",
            }
        )
    max_steps = runtime.settings.max_ig_steps
    steps = min(DEFAULT_STEPS, max_steps) if body.steps is None else body.steps
    if steps > max_steps:
        problems.append(
            {
                "loc": ["body", "steps"],
                "msg": f"{steps} steps; the limit is {max_steps}",
                "type": "too_many_steps",
            }
        )
    if problems:
        raise InvalidInputError(problems)
    encoded, result = await runtime.explain(
        body.text,
        label=body.label,
        methods=body.methods,
        steps=steps,
        baseline=body.baseline,
        replacement=body.occlusion,
        decimals=body.decimals,
    )
    unk = runtime.predictor.vocab.unk_id
    gradients = result.integrated_gradients
    occluded = result.occlusion
    return ExplainResponse.model_construct(
        tokens=token_infos(encoded.tokens, encoded.ids, unk),
        label=result.label,
        prediction=prediction_of(result.prediction),
        integrated_gradients=None if gradients is None else integrated_gradients_of(gradients),
        occlusion=None if occluded is None else occlusion_of(occluded),
        model=model_ref(runtime.model),
    )
