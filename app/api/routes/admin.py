"""POST /admin/reload and POST, DELETE /admin/models/{name}: serve the checkpoints now in the
store, load a model or unload one, without a restart.

Mounted only when `APP_ADMIN_KEYS` is set, behind those keys (not the API keys). How a reload
works, and what happens to the requests in flight, is in `app.inference.slot`; loading and
unloading in `app.inference.store`.

With several worker processes (`WORKERS` > 1) each holds its own models, and a call reaches
one of them. A load or a reload there then asks the arbiter to have every worker reload,
which also loads the folders new to the store: every worker ends up serving the new model.
An unload changes only the worker that answered, because a reload never drops a model: to
take one out of every worker, remove its folder from the store (or from `APP_MODELS`) and
restart the service.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from app.api.errors import error_doc, error_responses
from app.api.responses import model_ref
from app.api.schemas.operations import (
    ModelLoadResponse,
    ModelReload,
    ModelUnloadResponse,
    ReloadResponse,
)
from app.core.config import MODEL_NAME_PATTERN, MODEL_NAME_RULE
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


_LOAD_CONFLICT = error_doc(
    409,
    "The checkpoint cannot be served (`load_failed`: missing, truncated or altered file, "
    "incompatible config, or the settings fix the models), or the model is already loaded "
    "(`model_already_loaded`); nothing changed",
    "load_failed",
    "The model 'reviews' cannot be loaded: checkpoint/model.safetensors: sha256 does not match "
    "manifest.json; the file is corrupt or was changed",
)
_NO_FOLDER = error_doc(
    404,
    "The store has no checkpoint folder of that name",
    "checkpoint_not_found",
    "The model store has no checkpoint folder named 'reviews' (a folder holding manifest.json).",
)
_UNLOAD_CONFLICT = error_doc(
    409,
    "The default model answers the requests that name none: it cannot be unloaded",
    "default_model",
    "The model 'default' is the default (APP_DEFAULT_MODEL): it answers requests that name no "
    "model and cannot be unloaded.",
)
# A folder's name: no path separator, no leading dot, so no name leaves the store.
ModelPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=MODEL_NAME_PATTERN,
        description=f"The model's name, its folder's in the store: {MODEL_NAME_RULE}.",
    ),
]


@router.post("/admin/reload", responses={**error_responses(401, 404, 422), **_RELOAD_FAILED})
async def reload(
    request: Request,
    model: str | None = Query(
        None,
        max_length=64,
        pattern=MODEL_NAME_PATTERN,
        description="The model to reload; omitted: every model (and the folders new to the "
        "store are loaded).",
    ),
) -> ReloadResponse:
    """Load and verify each model's checkpoint next to the served one, warm it up, then switch
    to it: requests in flight finish on the version they started with, every later one gets
    the new one; nothing fails meanwhile. Without a model, checkpoint folders added to the
    store since are loaded too (unless `APP_MODELS` fixes the list, or they were unloaded by
    DELETE /admin/models/{name}): a reload never drops a model. The answer's top level is
    the named model's outcome (or the default's), `models` every model's. A checkpoint that
    cannot be served is a 409 for the named or default model, and changes nothing for it.
    Point a model's folder at a symlink and flip it (`ln -sfn v2 current`) to deploy a new
    version; SIGHUP reloads every model."""
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


@router.post(
    "/admin/models/{name}",
    status_code=201,
    responses={**error_responses(401, 422), **_NO_FOLDER, **_LOAD_CONFLICT},
)
async def load_model(name: ModelPath, request: Request) -> ModelLoadResponse:
    """Serve the checkpoint folder `APP_MODEL_STORE/{name}` from now on, as model `name`
    (after `make train MODEL_NAME=name`, or a copy into the store). It is verified as at
    start-up, then built and warmed up off the event loop: the other models keep answering
    meanwhile, and requests naming this one get 503 `model_not_ready` until it is ready.

    A model already served is a 409 `model_already_loaded` (POST /admin/reload?model=name
    serves a new checkpoint in its folder); one that failed to load is tried again. A
    checkpoint that cannot be served is a 409 `load_failed` with the reason, and changes
    nothing. With `WORKERS` > 1 the other workers are asked to reload, which loads the new
    folder in each of them too (`other_workers_signalled`)."""
    store: ModelStore = request.state.store
    started = time.perf_counter()
    model = await store.load(name)
    return ModelLoadResponse(
        model=model_ref(model),
        seconds=round(time.perf_counter() - started, 3),
        other_workers_signalled=signal_other_workers(),
    )


@router.delete(
    "/admin/models/{name}",
    responses={**error_responses(401, 404, 422), **_UNLOAD_CONFLICT},
)
async def unload_model(name: ModelPath, request: Request) -> ModelUnloadResponse:
    """Stop serving model `name`: requests naming it get 404 `model_not_found` from now on,
    the requests that already hold it finish on it (up to the request timeout), then its
    memory and threads are freed. The default model cannot be unloaded (409 `default_model`).

    With `WORKERS` > 1 this changes the worker that answered only: a reload never drops a
    model, so to take one out of every worker, remove its folder from the store (or from
    `APP_MODELS`) and restart. POST /admin/models/{name} serves it again."""
    store: ModelStore = request.state.store
    unloaded = await store.unload(name)
    return ModelUnloadResponse(name=name, version=unloaded.version if unloaded else None)
