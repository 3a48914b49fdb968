"""POST /predict: the sentiment of one text or of a batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_responses
from app.api.responses import predict_body
from app.api.schemas.examples import PREDICT_EXAMPLES
from app.api.schemas.predict import BatchPredictResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["inference"])


@router.post(
    "/predict",
    responses=error_responses(400, 401, 404, 413, 415, 422, 503),
    # Documents the answer; `predict_body` builds it, for this route and the fast path alike.
    response_model=PredictResponse | BatchPredictResponse,
)
async def predict(
    body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
    runtime: InferenceRuntimeDep,
    request: Request,
) -> Response:
    """Predict the sentiment of one text (`text`) or of a batch (`texts`)."""
    with serving_for(request, runtime, body.model) as serving:
        runtime = serving.runtime
        if body.text is not None:
            predictions = await runtime.predict([body.text], field="text")
        else:
            predictions = await runtime.predict(body.texts or [], field="texts")
        return Response(
            predict_body(predictions, runtime.model, batch=body.text is None),
            media_type="application/json",
        )
