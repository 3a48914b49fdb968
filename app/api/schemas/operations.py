"""GET /healthz, GET /readyz and POST /admin/reload: probes and operations."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import ModelRef


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef


class ReloadResponse(BaseModel):
    """What POST /admin/reload did in the worker that answered."""

    status: Literal["reloaded", "unchanged"] = Field(
        description="reloaded: the new checkpoint is served from now on; unchanged: the "
        "checkpoint at APP_MODEL_DIR is the one already served."
    )
    model: ModelRef = Field(description="The model served now.")
    previous: ModelRef = Field(description="The model served before.")
    seconds: float = Field(description="Time to load, verify and warm up the checkpoint.")
    other_workers_signalled: bool = Field(
        description="With WORKERS > 1: the other worker processes were told to reload too "
        "(each does it on its own, in the background, and logs the outcome)."
    )
