"""Dependencies shared by the routes: the runtime, the JSON body check, the API key check."""

# No `from __future__ import annotations` here: FastAPI reads these signatures at run time,
# and `check_api_key` refers to a local (`bearer`) that a string annotation could not name.

import hashlib
import hmac
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from app.errors import ApiError, UnavailableError
from app.ratelimit import RateLimiter
from app.runtime import Runtime


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
    else:
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type == "application/json" or (
            media_type.startswith("application/") and media_type.endswith("+json")
        ):
            return
    raise ApiError(
        415,
        "unsupported_media_type",
        "Request bodies must be JSON: send 'Content-Type: application/json'.",
    )


def api_key_auth(
    keys: Sequence[SecretStr], *, scheme: str = "ApiKey", setting: str = "APP_API_KEYS"
) -> Callable[..., Awaitable[None]]:
    """A dependency checking `Authorization: Bearer <key>` against `keys` in constant time.

    `scheme` names the security scheme in the OpenAPI document; `setting` is where the keys
    come from (its description)."""
    expected = [key.get_secret_value().encode("utf-8") for key in keys]
    bearer = HTTPBearer(
        auto_error=False, scheme_name=scheme, description=f"One of the keys in {setting}."
    )

    async def check_api_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        offered = credentials.credentials.encode("utf-8") if credentials else b""
        # Compared with every key, so the timing tells neither a key nor which one matched.
        matched = False
        for key in expected:
            matched |= hmac.compare_digest(offered, key)
        if not matched:
            raise ApiError(
                401,
                "unauthorized",
                "A valid API key is required: send 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check_api_key


def rate_limit(limiter: RateLimiter, *, by_key: bool) -> Callable[..., Awaitable[None]]:
    """A dependency taking one request from the client's bucket, or 429 with Retry-After.

    The client is its API key when `by_key` (after `api_key_auth` has checked it; the bucket is
    named by the key's sha256, never the key), else its address.
    """

    async def check_rate(request: Request) -> None:
        if by_key:
            offered = request.headers.get("authorization", "").encode("utf-8")
            client = "key:" + hashlib.sha256(offered).hexdigest()
        else:
            client = "addr:" + (request.client.host if request.client else "")
        wait_s = limiter.acquire(client)
        if wait_s > 0:
            retry_after = max(1, math.ceil(wait_s))
            raise ApiError(
                429,
                "rate_limited",
                f"Too many requests; retry after {retry_after} seconds.",
                headers={"Retry-After": str(retry_after)},
            )

    return check_rate
