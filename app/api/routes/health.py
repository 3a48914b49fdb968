"""GET /healthz and GET /readyz: probes for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import RuntimeDep
from app.api.errors import error_responses
from app.api.responses import model_ref
from app.api.schemas.operations import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthResponse:
    """The process is alive (says nothing about the model)."""
    return HealthResponse()


@router.get("/readyz", responses=error_responses(503))
async def readyz(runtime: RuntimeDep) -> ReadyResponse:
    """200 once the model is loaded and warmed up; 503 before that and while shutting down."""
    return ReadyResponse(model=model_ref(runtime.model))
