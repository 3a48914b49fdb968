"""Dependencies shared by the routes: the runtime, the JSON body check, the caller check."""

# No `from __future__ import annotations` here: FastAPI reads these signatures at run time.

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from app.core.errors import ApiError, UnavailableError
from app.http.security import Gate, is_json
from app.inference.rollout import Canary
from app.inference.runtime import Runtime
from app.inference.slot import Serving
from app.inference.store import ModelStore


async def get_runtime(request: Request) -> Runtime:
    """The loaded runtime, or 503 while the model is not (or no longer) ready."""
    runtime: Runtime | None = getattr(request.state, "runtime", None)
    if runtime is None or not runtime.ready:
        retry_after = runtime.settings.retry_after_s if runtime is not None else 1
        raise UnavailableError(
            "not_ready", "The model is not loaded yet; retry later.", retry_after
        )
    return runtime


async def get_inference_runtime(request: Request) -> Runtime:
    """`get_runtime` for routes that take a JSON body: 415 first if the body is not JSON.

    One dependency rather than two: each costs the hot path several microseconds.
    """
    require_json(request)
    return await get_runtime(request)


# The routes a canary (APP_CANARY) answers part of: one request, one answer. Never the
# stream routes: a stream's state is bound to the model that began it (app/inference/rollout.py).
CANARY_ROUTES = frozenset({"/predict", "/tokenize", "/hidden-states", "/explain"})


@contextmanager
def serving_for(request: Request, runtime: Runtime, name: str | None) -> Iterator[Serving]:
    """The model a request names (`"model"` in its body), or the default one it was given
    (`runtime`, with its streams) when it names none or the default: 404 `model_not_found`
    for a name the store does not hold, 503 for a model not being served. With a canary set,
    a request on one of `CANARY_ROUTES` that names no model may get the canary instead.

    A named model's runtime counts the request in flight until the block ends, as the request
    middleware does for the default's, so a reload of that model waits for it.
    """
    store: ModelStore
    if name is None:
        canary: Canary | None = getattr(request.app.state, "canary", None)
        serving = None
        if canary is not None and _route_path(request) in CANARY_ROUTES:
            store = request.state.store
            serving = canary.pick(store)
        if serving is None:
            yield Serving(runtime, request.state.streams)
            return
    elif name == runtime.model.name:
        yield Serving(runtime, request.state.streams)
        return
    else:
        store = request.state.store
        serving = store.serving(name)
    with serving.runtime.held():
        yield serving


def _route_path(request: Request) -> str | None:
    """The template of the route serving `request` (Starlette puts the route in the scope)."""
    route = request.scope.get("route")
    path: str | None = getattr(route, "path", None)
    return path


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
InferenceRuntimeDep = Annotated[Runtime, Depends(get_inference_runtime)]


def require_json(request: Request) -> None:
    """415 unless a request that carries a body says it is JSON."""
    content_type = request.headers.get("content-type")
    if content_type is None:
        has_body = request.headers.get("content-length", "0") != "0" or (
            "transfer-encoding" in request.headers
        )
        if not has_body:
            return
    elif is_json(content_type.encode("latin-1")):
        return
    raise ApiError(
        415,
        "unsupported_media_type",
        "Request bodies must be JSON: send 'Content-Type: application/json'.",
    )


def guarded(gate: Gate, *, scheme: str = "ApiKey", setting: str = "APP_API_KEYS") -> list[Any]:
    """The route dependencies that apply `gate` (`app.http.security`): nothing when it requires
    nothing, else its check, plus the bearer scheme that documents it in OpenAPI.

    `scheme` names the security scheme in the OpenAPI document; `setting` is where its keys
    come from (its description)."""
    if not gate.keys and gate.limiter is None:
        return []

    async def check_caller(request: Request) -> None:
        gate.check(request.scope)

    dependencies: list[Any] = [Depends(check_caller)]
    if gate.keys:
        bearer = HTTPBearer(
            auto_error=False, scheme_name=scheme, description=f"One of the keys in {setting}."
        )
        dependencies.insert(0, Security(bearer))
    return dependencies
