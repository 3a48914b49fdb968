"""GET /healthz and GET /readyz: probes for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.api.responses import model_ref
from app.api.schemas.operations import HealthResponse, ModelStatus, ReadyResponse
from app.inference.store import ModelStore

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthResponse:
    """The process is alive (says nothing about the model)."""
    return HealthResponse()


@router.get("/readyz", responses=error_responses(503))
async def readyz(runtime: RuntimeDep, request: Request) -> ReadyResponse:
    """200 once the default model is loaded and warmed up; 503 before that and while shutting
    down. The body lists every model's status (GET /models says more)."""
    store: ModelStore | None = getattr(request.state, "store", None)
    models = [] if store is None else [ModelStatus(name=e.name, status=e.status) for e in store]
    return ReadyResponse(model=model_ref(runtime.model), models=models)
