"""The model being served, and swapping it for a new checkpoint without failing a request.

`ModelSlot` holds the `Serving` (runtime and stream service) that new requests get. The request
middleware hands each request the current one when it arrives (`scope["state"]`), and the
request keeps it to the end: a request never mixes two models, and its answer names the model
that computed it.

`reload()` (POST /admin/reload, or SIGHUP) makes the served model the checkpoint now at
`APP_MODEL_DIR`:

1. load and verify it next to the one in place (sha256 manifest, config; on a thread, so the
   event loop keeps serving). `APP_MODEL_DIR` is resolved once, at the start of the load: the
   checkpoint is the version directory the link named then, whole, however the link moves
   meanwhile, and the log names that directory. The same checkpoint as the one served:
   nothing changes;
2. build its queues and warm it up from the loaded checkpoint (the directory is not read
   again), off the event loop too;
3. swap: one assignment on the event loop, so every request from then on gets the new model;
4. retire the old one: wait until the requests that hold it are done (up to the request
   timeout), then stop its queues and threads.

Any failure before the swap (a missing, truncated or tampered file, an incompatible config)
raises `ReloadError` naming the problem, and the old model keeps serving as if nothing happened.
One reload runs at a time; a second waits for the first and then finds nothing to change.

`unload()` (DELETE /admin/models/{name}, through `app.inference.store`) takes the model out of
service: it waits for a reload under way to end, then retires the served model as step 4 does
(the requests that hold it finish on it), and the slot serves nothing from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.core.config import Settings
from app.core.metrics import Metrics
from app.inference.runtime import ModelIdentity, Runtime
from app.inference.tasks import TaskSet
from training.checkpoint import CheckpointError, load_checkpoint

if TYPE_CHECKING:  # built by the factory the app hands in: streaming sits above inference
    from app.streaming.service import StreamService

logger = logging.getLogger("app.inference.slot")

# Set by `app.http.server` in a gunicorn arbiter for its workers: the arbiter's pid.
ARBITER_PID_ENV = "RNN_SENTIMENT_ARBITER_PID"


@dataclass(frozen=True)
class Serving:
    """What one request works with: a runtime and the stream service on its predictor."""

    runtime: Runtime
    streams: StreamService


# Builds the stream service on a new runtime; `first` is True at start-up, False on reloads.
StreamsFactory = Callable[[Runtime, bool], "StreamService"]


@dataclass(frozen=True)
class ReloadOutcome:
    changed: bool
    previous: ModelIdentity
    current: ModelIdentity
    seconds: float


class StartupError(Exception):
    """The model could not be loaded at start-up, so the server must not start. Raised by the
    app's lifespan once it has reported why; the message is that reason, on one line."""


class ReloadError(Exception):
    """The new checkpoint could not be served; the old one still is. The message says why."""


class ModelSlot:
    """The current `Serving`, built at start-up and replaced by `reload()`."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        build_streams: StreamsFactory,
        *,
        name: str | None = None,
        model_dir: Path | None = None,
    ) -> None:
        """The slot of model `name` (default: the default model) served from `model_dir`
        (default: where the settings put that model)."""
        self.settings = settings
        self.name = name or settings.default_model
        self.model_dir = model_dir or settings.model_dirs()[self.name]
        self.metrics = metrics
        self._build_streams = build_streams
        self._current: Serving | None = None
        self._lock = asyncio.Lock()
        self._retiring = TaskSet("retire")
        self._background = TaskSet("reload")
        # Reloads read and build checkpoints on this one thread (not the loop's default pool,
        # whose several threads would each keep a malloc arena of freed model memory).
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload")

    @property
    def is_default(self) -> bool:
        """Whether this slot serves the default model (`/readyz` and `rnn_sentiment_ready`
        follow it)."""
        return self.name == self.settings.default_model

    @property
    def current(self) -> Serving | None:
        """What a request arriving now gets; None before start-up finished."""
        return self._current

    async def start(self, *, off_loop: bool = False) -> Serving:
        """Load the checkpoint at `model_dir` and warm it up (raises what loading raised).
        `off_loop`: read, build and warm it up on the loader thread, as a reload does (a model
        loaded while others serve), instead of on the event loop (at start-up)."""
        if off_loop:
            loop = asyncio.get_running_loop()
            checkpoint = await loop.run_in_executor(self._loader, load_checkpoint, self.model_dir)
            runtime = await loop.run_in_executor(
                self._loader,
                functools.partial(
                    Runtime.load, self.settings, self.metrics, checkpoint, name=self.name
                ),
            )
        else:
            checkpoint = load_checkpoint(self.model_dir)
            runtime = Runtime.load(self.settings, self.metrics, checkpoint, name=self.name)
        serving = await self._build(runtime, off_loop=off_loop)
        self._install(serving, previous=None)
        return serving

    async def reload(self) -> ReloadOutcome:
        """Serve the checkpoint now at `APP_MODEL_DIR` (see the module doc); `ReloadError`."""
        # Shielded: a client that hangs up does not leave a half-built model behind. Tracked,
        # so that shutting down cancels it instead of leaving it running.
        return await asyncio.shield(self._background.start(self._reload()))

    def reload_in_background(self) -> None:
        """`reload()` without a caller to answer (SIGHUP): the outcome goes to the log."""
        self._background.start(self._logged_reload())

    async def stop(self) -> None:
        """Stop the current model and any being retired (at shutdown)."""
        self._background.cancel()
        await asyncio.gather(*self._background, *self._retiring, return_exceptions=True)
        serving, self._current = self._current, None
        if serving is not None:
            await serving.runtime.stop()
        self._loader.shutdown(wait=False, cancel_futures=True)
        if self.is_default:
            self.metrics.ready.set(0)

    async def unload(self) -> None:
        """Serve nothing from now on: the requests holding the model finish on it, then its
        queues and threads stop (see the module doc). The store has already stopped handing
        it to new requests."""
        async with self._lock:  # a reload under way finishes first, then finds nothing to do
            serving, self._current = self._current, None
        if serving is not None:
            model = serving.runtime.model
            self.metrics.model_info.labels(model.name, model.version).set(0)
            await self._retire(serving.runtime)
            serving.runtime.model_metrics.clear_queue_depth()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def _reload(self) -> ReloadOutcome:
        async with self._lock:
            current = self._current
            if current is None:
                raise ReloadError("The service has not started yet.")
            started = time.perf_counter()
            model_dir = self.model_dir
            loop = asyncio.get_running_loop()
            try:
                checkpoint = await loop.run_in_executor(self._loader, load_checkpoint, model_dir)
                loaded = {"model_dir": str(checkpoint.path), "version": checkpoint.version}
                if checkpoint.sha256 == current.runtime.predictor.checkpoint.sha256:
                    logger.info(
                        "reload: the checkpoint is the one served, nothing to do", extra=loaded
                    )
                    self.metrics.count_reload(self.name, "unchanged")
                    return ReloadOutcome(
                        False, current.runtime.model, current.runtime.model, _since(started)
                    )
                # Built from `checkpoint` itself: reading APP_MODEL_DIR again could find another
                # version there by now.
                runtime = await loop.run_in_executor(
                    self._loader,
                    functools.partial(
                        Runtime.load, self.settings, self.metrics, checkpoint, name=self.name
                    ),
                )
                serving = await self._build(runtime, off_loop=True)
            except CheckpointError as error:
                self.metrics.count_reload(self.name, "failed")
                logger.error("reload refused, the served model stays: %s", error)
                raise ReloadError(str(error)) from None
            except Exception as error:
                self.metrics.count_reload(self.name, "failed")
                logger.exception("reload failed, the served model stays")
                raise ReloadError(
                    f"The checkpoint in {model_dir} could not be loaded: "
                    f"{type(error).__name__}: {error}"
                ) from None
            self._install(serving, previous=current)
            self.metrics.count_reload(self.name, "reloaded")
            outcome = ReloadOutcome(True, current.runtime.model, runtime.model, _since(started))
            logger.info(
                "reloaded",
                extra={
                    "previous": outcome.previous.version,
                    **loaded,
                    "seconds": round(outcome.seconds, 3),
                },
            )
            return outcome

    async def _logged_reload(self) -> None:
        with contextlib.suppress(ReloadError):  # logged with its reason by _reload
            await self.reload()

    async def _build(self, runtime: Runtime, *, off_loop: bool) -> Serving:
        # Stream-signing notices are logged once, for the default model's first build.
        streams = self._build_streams(runtime, self._current is None and self.is_default)
        try:
            await runtime.start(warm_up_off_loop=off_loop)
        except BaseException:
            await runtime.stop()
            raise
        return Serving(runtime, streams)

    def _install(self, serving: Serving, *, previous: Serving | None) -> None:
        self._current = serving
        model = serving.runtime.model
        self.metrics.model_info.labels(model.name, model.version).set(1)
        if self.is_default:
            self.metrics.ready.set(1)
        if previous is not None:
            old = previous.runtime.model
            if old != model:
                self.metrics.model_info.labels(old.name, old.version).set(0)
            self._retiring.start(self._retire(previous.runtime))

    async def _retire(self, runtime: Runtime) -> None:
        # Requests that started before the swap finish on the model they started with; past
        # their deadline the batcher would refuse them anyway.
        grace_s = self.settings.request_timeout_s + 1
        if not await runtime.drain(grace_s):
            logger.warning(
                "retiring the previous model with requests still holding it",
                extra={"requests": runtime.in_flight, "seconds": grace_s},
            )
        await runtime.stop(wait=False)
        del runtime
        if self.settings.gc_freeze:
            # The old model was frozen with the start-up heap: let the collector reach it.
            gc.unfreeze()
            gc.collect()
            gc.freeze()
        else:
            gc.collect()
        _return_freed_memory()


def signal_other_workers() -> bool:
    """Under a gunicorn arbiter (WORKERS > 1), ask it to have every worker reload (SIGHUP,
    which the arbiter passes on to each worker); False when this process has no arbiter."""
    arbiter = os.environ.get(ARBITER_PID_ENV)
    if arbiter is None or not arbiter.isdigit() or int(arbiter) != os.getppid():
        return False
    os.kill(int(arbiter), signal.SIGHUP)
    return True


def _return_freed_memory() -> None:
    """Hand the old model's freed heap back to the system (glibc's malloc_trim), so a worker's
    RSS shows what it uses; elsewhere a no-op. Without it glibc keeps the pages for reuse and
    RSS climbs by a model's size on each of the first reloads before it levels off."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _since(started: float) -> float:
    return time.perf_counter() - started
