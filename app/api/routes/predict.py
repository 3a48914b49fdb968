"""POST /predict: the sentiment of one text or of a batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from app.api.deps import InferenceRuntimeDep, serving_for
from app.api.errors import error_responses
from app.api.responses import predict_body
from app.api.schemas.examples import PREDICT_EXAMPLES
from app.api.schemas.predict import BatchPredictResponse, PredictRequest, PredictResponse
from app.inference.results import PredictionResult
from app.inference.rollout import Shadow
from app.inference.store import ModelStore

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
    texts, field = ([body.text], "text") if body.text is not None else (body.texts or [], "texts")
    with serving_for(request, runtime, body.model) as serving:
        predictions = await serving.runtime.predict(texts, field=field)
        threshold = (  # the request's, else the setting's
            serving.runtime.settings.min_confidence
            if body.min_confidence is None
            else body.min_confidence
        )
        answer = predict_body(
            predictions, serving.runtime.model, batch=body.text is None, min_confidence=threshold
        )
    shadow: Shadow | None = getattr(request.app.state, "shadow", None)
    if shadow is not None and serving.runtime is runtime:  # the default answered
        # Run by Starlette once the body is sent: it starts the shadow's task and returns.
        background = BackgroundTask(_launch, shadow, request.state.store, texts, predictions)
        return Response(answer, media_type="application/json", background=background)
    return Response(answer, media_type="application/json")


async def _launch(
    shadow: Shadow, store: ModelStore, texts: list[str], predictions: list[PredictionResult]
) -> None:
    shadow.launch(store, texts, predictions)
