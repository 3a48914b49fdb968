"""GET /model: the model card of the checkpoint being served."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.api.responses import architecture_of
from app.api.schemas.model import (
    EndpointDtypes,
    InferenceInfo,
    Limits,
    ModelCardResponse,
    VocabularyInfo,
)
from app.inference.results import dtype_name, stream_tolerance

router = APIRouter(tags=["model"])


@router.get("/model", responses=error_responses(401, 503))
async def model_card(runtime: RuntimeDep) -> ModelCardResponse:
    """Architecture, labels, vocabulary size, held-out metrics and checkpoint sha256."""
    predictor = runtime.predictor
    card = predictor.checkpoint.card
    metrics = card.get("metrics")
    settings = runtime.settings
    return ModelCardResponse(
        name=runtime.model.name,
        version=predictor.version,
        sha256=predictor.checkpoint.sha256,
        labels=list(predictor.labels),
        vocab_size=len(predictor.vocab),
        vocabulary=_vocabulary(len(predictor.vocab), card.get("vocabulary")),
        architecture=architecture_of(predictor),
        metrics=metrics if isinstance(metrics, dict) else None,
        card=card,
        limits=Limits(
            max_text_chars=settings.max_text_chars,
            max_tokens=settings.max_tokens,
            max_texts=settings.max_texts,
            max_body_bytes=settings.max_body_bytes,
            max_hidden_state_tokens=settings.max_hidden_state_tokens,
            max_response_bytes=settings.max_response_bytes,
            max_explain_tokens=settings.max_explain_tokens,
            max_ig_steps=settings.max_ig_steps,
        ),
        inference=InferenceInfo(
            predict_dtype=dtype_name(predictor.pass_dtype),
            state_dtype=dtype_name(predictor.dtype),
            stream_tolerance=stream_tolerance(predictor.pass_dtype),
            # Read from what each endpoint runs, so the card cannot drift from the code.
            dtypes=EndpointDtypes(
                predict=dtype_name(predictor.pass_dtype),
                hidden_states=dtype_name(predictor.dtype),
                explain=dtype_name(next(runtime.explainer.model.parameters()).dtype),
                stream=dtype_name(predictor.dtype),
            ),
        ),
    )


def _vocabulary(size: int, recorded: Any) -> VocabularyInfo:
    """The vocabulary's size, and its coverage of the test split where training recorded it."""
    recorded = recorded if isinstance(recorded, dict) else {}

    def count(key: str) -> int | None:
        value = recorded.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    tokens, unknown = count("test_tokens"), count("test_tokens_unknown")
    return VocabularyInfo(
        size=size,
        pretrained_rows=count("pretrained_rows"),
        test_tokens=tokens,
        test_tokens_unknown=unknown,
        test_coverage=(round(1 - unknown / tokens, 6) if tokens and unknown is not None else None),
    )
