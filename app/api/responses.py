"""The inference layer's results turned into the API's wire bodies: one function per result.

The inference code has its own types (`PredictionResult`, `LayerStateValues`,
`ModelIdentity`, ...); routes never copy their fields themselves but go through these
functions, so a field added to a response is added here. `model_construct` skips validation:
these values come from the model, not from a client.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from app.api.schemas.common import ModelRef, Prediction, Step, TokenInfo
from app.api.schemas.explain import IntegratedGradientsResult, OcclusionResult
from app.api.schemas.hidden_states import LayerStates
from app.api.schemas.model import Architecture
from app.inference.explain import QUADRATURE, IntegratedGradients, Occlusion
from app.inference.predictor import Predictor
from app.inference.results import LayerStateValues, PredictionResult, warnings_of
from app.inference.runtime import ModelIdentity
from training.tokenizer import Token


def architecture_of(predictor: Predictor) -> Architecture:
    """The served model's shape, as GET /model and GET /models describe it."""
    config = predictor.model.config
    return Architecture(
        cell=config.cell,
        embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        dropout=config.dropout,
        parameters=predictor.num_parameters,
    )


def model_ref(model: ModelIdentity) -> ModelRef:
    return ModelRef.model_construct(name=model.name, version=model.version)


def token_infos(tokens: Sequence[Token], ids: Sequence[int], unk_id: int) -> list[TokenInfo]:
    """Each token with its vocabulary id, character offsets and out-of-vocabulary flag."""
    return [
        TokenInfo.model_construct(
            text=token.text, start=token.start, end=token.end, id=id_, oov=id_ == unk_id
        )
        for token, id_ in zip(tokens, ids, strict=True)
    ]


def prediction_of(result: PredictionResult) -> Prediction:
    return Prediction.model_construct(
        label=result.label, score=result.score, probabilities=result.probabilities
    )


def steps_of(steps: Sequence[tuple[str, dict[str, float]]]) -> list[Step]:
    """Per-token predictions, each a (label, probabilities) pair."""
    return [Step.model_construct(label=label, probabilities=p) for label, p in steps]


def layer_states_of(values: LayerStateValues) -> LayerStates:
    return LayerStates.model_construct(
        layer=values.layer,
        direction=values.direction,
        hidden=values.hidden,
        cell=values.cell,
        gates=values.gates,
        units=values.units,
        norm=values.norm,
        saturated=values.saturated,
    )


def integrated_gradients_of(result: IntegratedGradients) -> IntegratedGradientsResult:
    return IntegratedGradientsResult.model_construct(
        attributions=result.attributions,
        baseline=result.baseline,
        steps=result.steps,
        quadrature=QUADRATURE,
        logit=result.logit,
        baseline_logit=result.baseline_logit,
        delta=result.delta,
    )


def occlusion_of(result: Occlusion) -> OcclusionResult:
    return OcclusionResult.model_construct(
        replacement=result.replacement,
        attributions=result.attributions,
        probability_changes=result.probability_changes,
    )


def predict_body(
    predictions: Sequence[PredictionResult],
    model: ModelIdentity,
    *,
    batch: bool,
    min_confidence: float | None = None,
) -> bytes:
    """POST /predict's answer as JSON: a `PredictResponse` for one text, a
    `BatchPredictResponse` for `texts` (`batch`).

    Each prediction carries its text's signals and warnings, and whether its score reaches
    `min_confidence` (the request's, else the setting's): `confident`, null when no threshold
    applies.

    The route and the fast path (`app.http.fast_path`) both send these bytes, so their answers
    cannot drift apart. Built from plain dicts with orjson, without a pydantic model: this is
    the fast path's per-request work. tests/app/test_openapi.py checks the result against the
    two models.
    """
    ref = {"name": model.name, "version": model.version}
    if batch:
        return orjson.dumps(
            {
                "predictions": [_prediction(p, min_confidence) for p in predictions],
                "model": ref,
            }
        )
    (only,) = predictions
    body = _prediction(only, min_confidence)
    body["model"] = ref
    return orjson.dumps(body)


def _prediction(result: PredictionResult, min_confidence: float | None) -> dict[str, object]:
    """One prediction object of a /predict answer, as a plain dict (see `predict_body`)."""
    return {
        "label": result.label,
        "score": result.score,
        "probabilities": result.probabilities,
        "oov_ratio": result.oov_ratio,
        "token_count": result.token_count,
        "truncated": result.truncated,
        "warnings": warnings_of(result, min_confidence),
        "confident": None if min_confidence is None else result.score >= min_confidence,
    }
