"""GET /model: the model card of the checkpoint being served."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RuntimeDep
from app.errors import error_responses
from app.schemas import Architecture, Limits, ModelCardResponse

router = APIRouter(tags=["model"])


@router.get("/model", responses=error_responses(401, 503))
async def model_card(runtime: RuntimeDep) -> ModelCardResponse:
    """Architecture, labels, vocabulary size, held-out metrics and checkpoint sha256."""
    predictor = runtime.predictor
    config = predictor.model.config
    card = predictor.checkpoint.card
    metrics = card.get("metrics")
    settings = runtime.settings
    return ModelCardResponse(
        name=predictor.name,
        version=predictor.version,
        sha256=predictor.checkpoint.sha256,
        labels=list(predictor.labels),
        vocab_size=len(predictor.vocab),
        architecture=Architecture(
            cell=config.cell,
            embedding_dim=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            bidirectional=config.bidirectional,
            dropout=config.dropout,
            parameters=predictor.num_parameters,
        ),
        metrics=metrics if isinstance(metrics, dict) else None,
        card=card,
        limits=Limits(
            max_text_chars=settings.max_text_chars,
            max_tokens=settings.max_tokens,
            max_texts=settings.max_texts,
            max_body_bytes=settings.max_body_bytes,
            max_hidden_state_tokens=settings.max_hidden_state_tokens,
        ),
    )
