"""GET /healthz and GET /readyz: probes for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.errors import UnavailableError, error_responses
from app.runtime import Runtime
from app.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> HealthResponse:
    """The process is alive (says nothing about the model)."""
    return HealthResponse()


@router.get("/readyz", responses=error_responses(503))
async def readyz(request: Request) -> ReadyResponse:
    """200 once the model is loaded and warmed up; 503 before that and while shutting down."""
    runtime: Runtime | None = getattr(request.state, "runtime", None)
    if runtime is None or not runtime.ready:
        retry_after = runtime.settings.retry_after_s if runtime is not None else 1
        raise UnavailableError(
            "not_ready", "The model is not loaded yet; retry later.", retry_after
        )
    return ReadyResponse(model=runtime.model)
