"""The ASGI application: `create_app(settings)` builds it; `app` is the one `make serve` runs.

Building the app loads nothing: the lifespan loads the checkpoint (verifying its manifest),
warms the model up, and only then does `/readyz` answer 200. A checkpoint that cannot be
loaded ends the start-up: the log records why, and `StartupError` makes uvicorn exit non-zero
instead of serving (`python -m app` then ends with one plain line saying why).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.api.deps import guarded
from app.api.routes import (
    admin,
    docs,
    explain,
    explorer,
    health,
    hidden_states,
    model,
    models,
    predict,
    tokenize,
    v2,
)
from app.api.routes import metrics as metrics_route
from app.api.routes import stream as stream_routes
from app.core.config import Settings, get_settings
from app.core.logging import configure_logging
from app.core.metrics import Metrics
from app.http.errors import install_error_handlers
from app.http.fast_path import PredictFastPath
from app.http.middleware import GzipMiddleware, RequestMiddleware
from app.http.ratelimit import RateLimiter
from app.http.security import Gate, KeyRing
from app.inference.rollout import Rollout
from app.inference.slot import StartupError
from app.inference.store import ModelStore
from app.openapi import openapi_with_limits
from app.streaming.codec import stream_secret
from app.streaming.service import streams_factory
from app.streaming.websocket import Connections
from training.checkpoint import CheckpointError

logger = logging.getLogger("app.main")

STATIC_DIR = Path(__file__).parent / "static"
DESCRIPTION = """
Sentiment of English text from a recurrent neural network, and a look inside it:
`/predict` labels one text or a batch; `/hidden-states` shows the network's state after each
token and what it would predict if the text ended there; `/tokenize` and `/explain` show how it
reads a text and which words moved it. The page at `/` draws all of that for a typed text.

Every error has the same shape: `{"error": {"code", "message", "details"}, "request_id"}`.
"""


def _version() -> str:
    try:
        return version("rnn-sentiment")
    except PackageNotFoundError:
        return "0.0.0"


NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: from the environment). Loads no model."""
    settings = settings or get_settings()
    metrics = Metrics()
    rollout = Rollout(settings, metrics)  # APP_CANARY, APP_SHADOW: None each when unset
    app = FastAPI(
        title="rnn-sentiment",
        version=_version(),
        description=DESCRIPTION,
        # Made with the app, before gunicorn forks its workers: they all sign streams alike.
        lifespan=_lifespan(settings, metrics, stream_secret(settings), rollout),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.docs else None,
        # FastAPI's own OpenTelemetry hooks: off, the service has its metrics and logs, and
        # otherwise every request asks OpenTelemetry whether a provider was set up meanwhile.
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app, docs_path=docs.DOCS_PATH if settings.docs else None)

    # One gate per family of routes (app.http.security): the routes, the fast /predict path and the
    # WebSocket all check callers through the same object.
    limiter = (
        RateLimiter(settings.rate_limit_per_minute)
        if settings.rate_limit_per_minute is not None
        else None
    )
    api_gate = Gate(KeyRing.of(settings.api_keys), limiter)
    guards = guarded(api_gate)
    app.state.api_gate = api_gate
    app.state.canary = rollout.canary  # read by the routes (app.api.deps, /predict)
    app.state.shadow = rollout.shadow
    app.state.stream_ws_connections = Connections()  # this worker's /stream/ws sockets
    app.include_router(predict.router, dependencies=guards)
    app.include_router(hidden_states.router, dependencies=guards)
    app.include_router(model.router, dependencies=guards)
    app.include_router(models.router, dependencies=guards)
    app.include_router(tokenize.router, dependencies=guards)
    app.include_router(explain.router, dependencies=guards)
    app.include_router(stream_routes.router, dependencies=guards)
    app.include_router(stream_routes.ws_router)  # authenticates itself (see its module)
    app.include_router(health.router)
    # The Open Inference Protocol beside the native API: its probes unguarded like the ones
    # above, the rest behind the same guards (app.api.routes.v2).
    app.include_router(v2.health_router)
    app.include_router(v2.router, dependencies=guards)
    if settings.admin_keys:
        admin_gate = Gate(KeyRing.of(settings.admin_keys))
        app.include_router(
            admin.router,
            dependencies=guarded(admin_gate, scheme="AdminKey", setting="APP_ADMIN_KEYS"),
        )
    metrics_gate = Gate(KeyRing.of(settings.metrics_keys))
    app.include_router(
        metrics_route.build_router(metrics),
        dependencies=guarded(metrics_gate, scheme="MetricsKey", setting="APP_METRICS_KEYS"),
    )
    if settings.docs:
        app.include_router(docs.router)
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    if settings.explorer:
        app.include_router(explorer.build_router())
        app.mount(
            explorer.ASSETS_PATH,
            StaticFiles(directory=explorer.PAGE_DIR),
            name="explorer",
        )
    else:

        @app.get("/", include_in_schema=False)
        async def home() -> RedirectResponse:
            return RedirectResponse("/docs" if settings.docs else "/readyz")

    app.openapi = openapi_with_limits(app, settings)  # type: ignore[method-assign]

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(
        RequestMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        body_deadline_s=settings.body_deadline_s,
        routes=app.routes,
        access_log=settings.access_log,
        fast_path=(
            PredictFastPath(
                api_gate,
                cors=bool(settings.cors_origins),
                canary=rollout.canary,
                shadow=rollout.shadow,
            )
            if settings.fast_path
            else None
        ),
    )
    # Outside the request middleware, so the fast /predict path's answers are compressed too.
    app.add_middleware(GzipMiddleware)
    if settings.trusted_proxies:
        # Outermost: every layer inside (rate limits, logs) sees the client the proxy names.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    return app


def _lifespan(
    settings: Settings, metrics: Metrics, secret: tuple[bytes, str], rollout: Rollout
) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        configure_logging(settings.log_level, settings.log_format)
        torch.set_num_threads(settings.torch_threads)
        started = time.perf_counter()
        store = ModelStore(settings, metrics, streams_factory(settings, metrics, secret))
        rollout.check(store)
        default_dir = settings.model_dirs()[settings.default_model]
        logger.info(
            "loading models",
            extra={"models": store.names, "default": store.default_name},
        )
        try:
            serving = await store.start()
        except Exception as error:
            raise _cannot_serve(default_dir, error) from None
        rollout.report(store)
        if settings.gc_freeze:
            # Everything allocated so far lives as long as the process: keep the collector off it.
            gc.collect()
            gc.freeze()
        logger.info(
            "ready",
            extra={
                "model": serving.runtime.model.name,
                "version": serving.runtime.model.version,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )
        hangup = _reload_on_sighup(store) if settings.reload_on_sighup else False
        try:
            # Each request gets the default slot's current runtime and streams
            # (RequestMiddleware); a request naming another model takes it from the store.
            yield {"slot": store.default, "store": store}
        finally:
            logger.info("shutting down")
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            await rollout.stop()  # the shadow's scoring first: it holds models' runtimes
            await store.stop()
            if settings.gc_freeze:
                gc.unfreeze()
            metrics.mark_process_dead()

    return lifespan


def _cannot_serve(model_dir: Path, error: Exception) -> StartupError:
    """Log a model that failed to load at start-up; the error that ends the start-up.

    A checkpoint the loader refused is logged with its reason alone (the message names the
    file and the problem: a traceback adds nothing), anything else with its traceback.
    uvicorn logs the traceback of the `StartupError` raised from here as well; the server
    drops that copy (`app.http.server`), the failure being told already.
    """
    told = isinstance(error, CheckpointError)
    reason = " ".join((str(error) if told else f"{type(error).__name__}: {error}").split())
    where = {"model_dir": str(model_dir)}
    if told:
        logger.error("cannot serve: the model failed to load: %s", reason, extra=where)
    else:
        logger.error("cannot serve: the model failed to load", exc_info=error, extra=where)
    return StartupError(reason)


def _reload_on_sighup(store: ModelStore) -> bool:
    """SIGHUP reloads every model (app.inference.store); False where no handler can be
    installed."""
    if threading.current_thread() is not threading.main_thread():
        return False  # e.g. an app run by a test harness on another thread
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, store.reload_in_background)
    except (NotImplementedError, RuntimeError):  # no signals on this platform or loop
        return False
    return True


app = create_app()
