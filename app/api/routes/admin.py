"""POST /admin/reload: serve the checkpoints now in the store, without a restart.

Mounted only when `APP_ADMIN_KEYS` is set, behind those keys (not the API keys). How a reload
works, and what happens to the requests in flight, is in `app.inference.slot`; the store of
models in `app.inference.store`.
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from app.api.errors import error_doc, error_responses
from app.api.responses import model_ref
from app.api.schemas.operations import ModelReload, ReloadResponse
from app.core.errors import ApiError
from app.inference.slot import ReloadError, ReloadOutcome, signal_other_workers
from app.inference.store import ModelStore

router = APIRouter(tags=["operations"])

_RELOAD_FAILED = error_doc(
    409,
    "The model's checkpoint cannot be served (missing, truncated or altered file, "
    "incompatible config); the version served before keeps serving",
    "reload_failed",
    "checkpoint/model.safetensors: sha256 does not match manifest.json; the file is corrupt "
    "or was changed",
)


@router.post("/admin/reload", responses={**error_responses(401, 404), **_RELOAD_FAILED})
async def reload(
    request: Request,
    model: str | None = Query(
        None, max_length=64, description="The model to reload; omitted: every model."
    ),
) -> ReloadResponse:
    """Load and verify each model's checkpoint next to the served one, warm it up, then switch
    to it: requests in flight finish on the version they started with, every later one gets
    the new one; nothing fails meanwhile. The answer's top level is the named model's outcome
    (or the default's), `models` every model's. A checkpoint that cannot be served is a 409
    for the named or default model, and changes nothing for it. Point a model's folder at a
    symlink and flip it (`ln -sfn v2 current`) to deploy a new version; SIGHUP reloads every
    model."""
    store: ModelStore = request.state.store
    outcomes = await store.reload(model)
    main = model or store.default_name
    first = outcomes[main]
    if isinstance(first, ReloadError):
        raise ApiError(409, "reload_failed", str(first))
    return ReloadResponse(
        status="reloaded" if first.changed else "unchanged",
        model=model_ref(first.current),
        previous=model_ref(first.previous),
        seconds=round(first.seconds, 3),
        other_workers_signalled=signal_other_workers(),
        models=[_outcome(name, outcome) for name, outcome in outcomes.items()],
    )


def _outcome(name: str, outcome: ReloadOutcome | ReloadError) -> ModelReload:
    if isinstance(outcome, ReloadError):
        return ModelReload(name=name, status="failed", reason=str(outcome))
    return ModelReload(
        name=name,
        status="reloaded" if outcome.changed else "unchanged",
        version=outcome.current.version,
    )
