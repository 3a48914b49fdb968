"""GET /metrics: Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.core.metrics import Metrics


def build_router(metrics: Metrics) -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    )
    async def prometheus_metrics() -> Response:
        """Request counts and latencies by route, inference time, batch sizes, queue depth."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    return router
