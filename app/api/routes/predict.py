"""POST /predict: the sentiment of one text or of a batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body

from app.api.deps import InferenceRuntimeDep
from app.api.errors import error_responses
from app.api.responses import model_ref, prediction_of
from app.api.schemas.examples import PREDICT_EXAMPLES
from app.api.schemas.predict import BatchPredictResponse, PredictRequest, PredictResponse

router = APIRouter(tags=["inference"])


@router.post("/predict", responses=error_responses(400, 401, 413, 415, 422, 503))
async def predict(
    body: Annotated[PredictRequest, Body(openapi_examples=PREDICT_EXAMPLES)],
    runtime: InferenceRuntimeDep,
) -> PredictResponse | BatchPredictResponse:
    """Predict the sentiment of one text (`text`) or of a batch (`texts`)."""
    if body.text is not None:
        (only,) = await runtime.predict([body.text], field="text")
        # Built without re-validation: the values come straight from the model.
        return PredictResponse.model_construct(
            label=only.label,
            score=only.score,
            probabilities=only.probabilities,
            model=model_ref(runtime.model),
        )
    predictions = await runtime.predict(body.texts or [], field="texts")
    return BatchPredictResponse.model_construct(
        predictions=[prediction_of(p) for p in predictions],
        model=model_ref(runtime.model),
    )
