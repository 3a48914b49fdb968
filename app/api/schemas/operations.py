"""GET /healthz, GET /readyz, POST /admin/reload and /admin/models/{name}: probes and
operations."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.schemas.common import ModelRef


class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"


class ModelStatus(BaseModel):
    name: str
    status: Literal["loading", "ready", "failed"]


class ReadyResponse(BaseModel):
    status: Literal["ready"] = "ready"
    model: ModelRef = Field(description="The default model.")
    models: list[ModelStatus] = Field(
        default_factory=list, description="Every model's status, the default first."
    )


class ModelReload(BaseModel):
    """One model's outcome in POST /admin/reload."""

    name: str
    status: Literal["reloaded", "unchanged", "failed"]
    version: str | None = Field(None, description="The version served now, unless it failed.")
    reason: str | None = Field(None, description="Why it failed; its previous version serves.")


class ReloadResponse(BaseModel):
    """What POST /admin/reload did in the worker that answered."""

    status: Literal["reloaded", "unchanged"] = Field(
        description="reloaded: the new checkpoint is served from now on; unchanged: the "
        "checkpoint in the model's folder is the one already served."
    )
    model: ModelRef = Field(description="The model served now.")
    previous: ModelRef = Field(description="The model served before.")
    seconds: float = Field(description="Time to load, verify and warm up the checkpoint.")
    other_workers_signalled: bool = Field(
        description="With WORKERS > 1: the other worker processes were told to reload too "
        "(each does it on its own, in the background, and logs the outcome)."
    )
    models: list[ModelReload] = Field(
        default_factory=list, description="Each model reloaded, with its outcome."
    )


class ModelLoadResponse(BaseModel):
    """What POST /admin/models/{name} did in the worker that answered."""

    status: Literal["loaded"] = "loaded"
    model: ModelRef = Field(description="The model served now under that name.")
    seconds: float = Field(description="Time to load, verify and warm up the checkpoint.")
    other_workers_signalled: bool = Field(
        description="With WORKERS > 1: the other worker processes were told to reload, which "
        "loads the folders new to the store and retries the models that failed (each does "
        "it on its own, in the background, and logs the outcome); false with one worker."
    )


class ModelUnloadResponse(BaseModel):
    """What DELETE /admin/models/{name} did in the worker that answered."""

    status: Literal["unloaded"] = "unloaded"
    name: str = Field(description="The model no longer served.")
    version: str | None = Field(
        description="The version it served until now; null when it had failed to load."
    )
