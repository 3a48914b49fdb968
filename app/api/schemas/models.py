"""GET /models and GET /models/{name}: the models this service holds."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from app.api.schemas.model import Architecture


class ModelSummary(BaseModel):
    """One model of the store: what it is and whether it serves."""

    name: str = Field(description="The model's name: its folder in APP_MODEL_STORE.")
    version: str | None = Field(
        description="A prefix of its checkpoint's sha256; null while it is not loaded."
    )
    default: bool = Field(description="It answers requests that name no model.")
    status: Literal["loading", "ready", "failed"] = Field(
        description="ready: it serves; failed: it could not be loaded (see `reason`)."
    )
    reason: str | None = Field(None, description="Why it failed to load, when it did.")
    architecture: Architecture | None = None
    labels: list[str] | None = Field(None, description="Its labels, in its output order.")
    metrics: dict[str, Any] | None = Field(
        None, description="Held-out metrics from its model card."
    )
    memory_bytes: int | None = Field(
        None, description="Bytes of weights it holds in memory (every copy its paths keep)."
    )


class ModelsResponse(BaseModel):
    models: list[ModelSummary] = Field(description="Every model, the default first.")
