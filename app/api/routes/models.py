"""GET /models and GET /models/{name}: every model of the store, and one of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from app.api.errors import error_responses
from app.api.responses import architecture_of
from app.api.schemas.models import ModelsResponse, ModelSummary
from app.inference.store import ModelStore, StoreEntry

router = APIRouter(tags=["model"])


@router.get("/models", responses=error_responses(401))
async def list_models(request: Request) -> ModelsResponse:
    """Every model this service holds, the default first, with its status."""
    store: ModelStore = request.state.store
    return ModelsResponse(models=[summary(entry, store) for entry in store])


@router.get("/models/{name}", responses=error_responses(401, 404, 422))
async def get_model(name: Annotated[str, Path(max_length=64)], request: Request) -> ModelSummary:
    """One model by name; 404 `model_not_found` lists the known names."""
    store: ModelStore = request.state.store
    return summary(store.entry(name), store)


def summary(entry: StoreEntry, store: ModelStore) -> ModelSummary:
    """What GET /models says of one model."""
    serving = entry.slot.current
    base = {
        "name": entry.name,
        "default": entry.name == store.default_name,
        "status": entry.status,
        "reason": entry.failure,
    }
    if serving is None:
        return ModelSummary(version=None, **base)
    runtime = serving.runtime
    predictor = runtime.predictor
    metrics = predictor.checkpoint.card.get("metrics")
    return ModelSummary(
        version=runtime.model.version,
        architecture=architecture_of(predictor),
        labels=list(predictor.labels),
        metrics=metrics if isinstance(metrics, dict) else None,
        memory_bytes=runtime.memory_bytes,
        **base,
    )
