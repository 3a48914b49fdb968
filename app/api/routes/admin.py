"""POST /admin/reload: serve the checkpoint now at APP_MODEL_DIR, without a restart.

Mounted only when `APP_ADMIN_KEYS` is set, behind those keys (not the API keys). How a reload
works, and what happens to the requests in flight, is in `app.inference.slot`.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.errors import error_doc, error_responses
from app.api.responses import model_ref
from app.api.schemas.operations import ReloadResponse
from app.core.errors import ApiError
from app.inference.slot import ModelSlot, ReloadError, signal_other_workers

router = APIRouter(tags=["operations"])

_RELOAD_FAILED = error_doc(
    409,
    "The checkpoint at APP_MODEL_DIR cannot be served (missing, truncated or altered file, "
    "incompatible config); the model served before keeps serving",
    "reload_failed",
    "checkpoint/model.safetensors: sha256 does not match manifest.json; the file is corrupt "
    "or was changed",
)


@router.post("/admin/reload", responses={**error_responses(401), **_RELOAD_FAILED})
async def reload(request: Request) -> ReloadResponse:
    """Load and verify the checkpoint at APP_MODEL_DIR next to the served one, warm it up, then
    switch to it: requests in flight finish on the model they started with, every later one
    gets the new one; nothing fails meanwhile. A checkpoint that cannot be served is a 409 and
    changes nothing. Point APP_MODEL_DIR at a symlink and flip it (`ln -sfn v2 current`) to
    deploy a new model; SIGHUP does the same as this route."""
    slot: ModelSlot = request.state.slot
    try:
        outcome = await slot.reload()
    except ReloadError as error:
        raise ApiError(409, "reload_failed", str(error)) from None
    return ReloadResponse(
        status="reloaded" if outcome.changed else "unchanged",
        model=model_ref(outcome.current),
        previous=model_ref(outcome.previous),
        seconds=round(outcome.seconds, 3),
        other_workers_signalled=signal_other_workers(),
    )
