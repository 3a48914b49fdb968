"""The models being served, by name: one `ModelSlot` each, and the default among them.

`APP_MODEL_STORE` is a directory with one checkpoint folder per model, the folder's name being
the model's (`Settings.model_dirs` lists them; `APP_MODELS` narrows the list, `APP_MODEL_DIR`
makes a store of one). At start-up every model is loaded and verified in turn, the default
first:

- the default model must load, or the service does not start (`StartupError` upstream);
- any other model that fails is kept in the list as `failed`, with its reason, and the rest
  serve. A later reload of it (POST /admin/reload with its name, or SIGHUP) tries again.

Each model has its own slot, and so its own runtime: its own batcher, threads and limits.
Loading a second model adds its weights and its queues, not another copy of the framework:
every slot shares the process's torch.

At run time (the admin routes, SIGHUP):

- `load(name)` serves the checkpoint folder `APP_MODEL_STORE/name`, verified as at start-up
  and built and warmed up off the event loop, so the other models keep answering meanwhile.
  It is listed `loading` until ready; a checkpoint that cannot be served is refused (409
  `load_failed`, with the reason) and leaves the store as it was. A model already served is
  not loaded twice (409 `model_already_loaded`: a reload is what replaces its version); one
  listed `failed` is tried again.
- `unload(name)` stops handing the model to new requests (they get 404 `model_not_found`),
  lets the requests that hold it finish, then frees it. The default model stays.
- `reload()` of every model also loads the checkpoint folders added to the store since (when
  `APP_MODELS` does not fix the list), except those unloaded since: it never drops a model.

Loads, unloads and reloads run one at a time (one lock for the store), so two calls for the
same name cannot both load it, and a reload never meets a model half loaded or half gone.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.core.config import MODEL_NAME_PATTERN, MODEL_NAME_RULE, Settings
from app.core.errors import ApiError, UnavailableError
from app.core.metrics import Metrics
from app.inference.runtime import ModelIdentity
from app.inference.slot import ModelSlot, ReloadError, ReloadOutcome, Serving, StreamsFactory
from app.inference.tasks import TaskSet
from training.checkpoint import MANIFEST_FILE, CheckpointError

logger = logging.getLogger("app.inference.store")

Status = Literal["loading", "ready", "failed"]


@dataclass
class StoreEntry:
    """One model of the store: its slot, and why it is not served when it failed to load."""

    name: str
    directory: Path
    slot: ModelSlot
    failure: str | None = None

    @property
    def status(self) -> Status:
        if self.failure is not None:
            return "failed"
        serving = self.slot.current
        return "ready" if serving is not None and serving.runtime.ready else "loading"


class ModelNotFoundError(ApiError):
    """404: a request named a model the store does not hold."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            404,
            "model_not_found",
            f"No model named {name!r}. Known models: {', '.join(known)}.",
            details=[
                {
                    "loc": ["body", "model"],
                    "msg": f"known models: {', '.join(known)}",
                    "type": "unknown_model",
                }
            ],
        )
        self.known = known


class LoadError(ApiError):
    """409 `load_failed`: the model's checkpoint cannot be served; the store is unchanged."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(409, "load_failed", f"The model {name!r} cannot be loaded: {reason}")
        self.reason = reason


class ModelStore:
    """Every served model by name (see the module doc)."""

    def __init__(self, settings: Settings, metrics: Metrics, build_streams: StreamsFactory) -> None:
        self.settings = settings
        self.metrics = metrics
        self.default_name = settings.default_model
        self._build_streams = build_streams
        self._entries: dict[str, StoreEntry] = {
            name: self._new_entry(name, directory)
            for name, directory in settings.model_dirs().items()
        }
        # Loads, unloads and reloads, one at a time (module doc).
        self._lock = asyncio.Lock()
        # Unloaded by name: a reload of every model does not bring them back; a load does.
        self._unloaded: set[str] = set()
        self._background = TaskSet("store")

    def _new_entry(self, name: str, directory: Path) -> StoreEntry:
        slot = ModelSlot(
            self.settings, self.metrics, self._build_streams, name=name, model_dir=directory
        )
        return StoreEntry(name, directory, slot)

    @property
    def default(self) -> ModelSlot:
        return self._entries[self.default_name].slot

    def __iter__(self) -> Iterator[StoreEntry]:
        return iter(self._entries.values())

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> StoreEntry:
        """The model called `name`, or `ModelNotFoundError` (404) naming the known ones."""
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFoundError(name, self.names)
        return entry

    def serving(self, name: str) -> Serving:
        """What a request for model `name` works with now; 404 for an unknown name, 503 for
        a model that failed to load or is not ready."""
        entry = self.entry(name)
        serving = entry.slot.current
        if entry.failure is not None or serving is None or not serving.runtime.ready:
            reason = f": {entry.failure}" if entry.failure is not None else ""
            raise UnavailableError(
                "model_not_ready",
                f"The model {name!r} is not being served{reason}.",
                self.settings.retry_after_s,
            )
        return serving

    async def start(self) -> Serving:
        """Load every model, the default first (its failure is raised; the others' kept)."""
        serving = await self.default.start()
        for entry in list(self._entries.values()):
            if entry.name == self.default_name:
                continue
            try:
                await entry.slot.start()
            except Exception as error:
                _refuse(entry, error)
            else:
                logger.info("model ready", extra={"model": entry.name})
        return serving

    async def reload(self, name: str | None = None) -> dict[str, ReloadOutcome | ReloadError]:
        """Reload model `name`, or every model: each one's outcome, or the error that kept its
        previous version serving. A model that failed at start-up is loaded afresh; without
        `name`, so are the folders new to the store (module doc)."""
        async with self._lock:
            if name is not None:
                entries = [self.entry(name)]
            else:
                self._add_new_folders()
                entries = list(self._entries.values())
            outcomes: dict[str, ReloadOutcome | ReloadError] = {}
            for entry in entries:
                try:
                    if entry.slot.current is None:
                        serving = await entry.slot.start(off_loop=True)
                        entry.failure = None
                        model = serving.runtime.model
                        outcomes[entry.name] = ReloadOutcome(True, model, model, 0.0)
                        logger.info("model loaded", extra={"model": entry.name})
                    else:
                        outcomes[entry.name] = await entry.slot.reload()
                except ReloadError as error:  # logged with its reason by the slot
                    outcomes[entry.name] = error
                except Exception as error:
                    outcomes[entry.name] = ReloadError(_refuse(entry, error))
            return outcomes

    def _add_new_folders(self) -> None:
        """List the checkpoint folders added to the store since (not when APP_MODELS or
        APP_MODEL_DIR fixes the models), except those unloaded by name."""
        if self.settings.models or self.settings.model_dir is not None:
            return
        for name, directory in self.settings.model_dirs().items():
            if name not in self._entries and name not in self._unloaded:
                self._entries[name] = self._new_entry(name, directory)

    def reload_in_background(self) -> None:
        """SIGHUP: reload every model (and load the folders new to the store), outcomes to
        the log."""
        self._background.start(self._logged_reload())

    async def _logged_reload(self) -> None:
        # Each model's outcome is logged where it happens; this catches what nothing expects
        # (an unreadable store), which would otherwise surface only when the task is collected.
        try:
            await self.reload()
        except Exception:
            logger.exception("reload of every model failed")

    async def load(self, name: str) -> ModelIdentity:
        """Serve the checkpoint folder `APP_MODEL_STORE/name` (module doc): the model now
        served. 422 for a name that is not one, 404 when the store has no such folder, 409
        `model_already_loaded`, 409 `load_failed` with the reason."""
        _check_name(name)
        # Shielded: a client that hangs up does not leave a model half loaded. Tracked, so
        # that shutting down cancels it instead.
        return await asyncio.shield(self._background.start(self._load(name)))

    async def _load(self, name: str) -> ModelIdentity:
        async with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.failure is None:
                raise ApiError(
                    409,
                    "model_already_loaded",
                    f"The model {name!r} is already loaded; POST /admin/reload?model={name} "
                    "serves a new checkpoint in its folder.",
                )
            directory = self._folder_of(name)
            fresh = entry is None
            if entry is None:
                entry = self._entries[name] = self._new_entry(name, directory)
            else:
                entry.failure = None  # listed `loading` while it is tried again
            try:
                serving = await entry.slot.start(off_loop=True)
            except Exception as error:
                reason = str(error) if isinstance(error, CheckpointError) else _one_line(error)
                if fresh:
                    del self._entries[name]
                    await entry.slot.unload()  # its loader thread
                else:
                    entry.failure = reason
                self.metrics.count_operation(name, "load", "failed")
                logger.error(
                    "load refused, the others serve: %s",
                    reason,
                    extra={"model": name, "model_dir": str(directory)},
                )
                raise LoadError(name, " ".join(reason.split())) from None
            self._unloaded.discard(name)
            model = serving.runtime.model
            self.metrics.count_operation(name, "load", "done")
            logger.info("model loaded", extra={"model": name, "version": model.version})
            return model

    def _folder_of(self, name: str) -> Path:
        """Where model `name`'s checkpoint is, if the settings let it be served."""
        settings = self.settings
        if settings.model_dir is not None:
            raise LoadError(
                name, "APP_MODEL_DIR serves one model; set APP_MODEL_STORE to serve several."
            )
        if settings.models and name not in settings.models:
            raise LoadError(name, f"APP_MODELS lists only {', '.join(settings.models)}.")
        directory = settings.model_store / name
        if not (directory / MANIFEST_FILE).is_file():
            raise ApiError(
                404,
                "checkpoint_not_found",
                f"The model store has no checkpoint folder named {name!r} (a folder holding "
                f"{MANIFEST_FILE}).",
            )
        return directory

    async def unload(self, name: str) -> ModelIdentity | None:
        """Stop serving model `name` (module doc): the version it served, None when it had
        failed to load. 404 for an unknown name, 409 for the default model."""
        async with self._lock:
            entry = self.entry(name)
            if name == self.default_name:
                raise ApiError(
                    409,
                    "default_model",
                    f"The model {name!r} is the default (APP_DEFAULT_MODEL): it answers "
                    "requests that name no model and cannot be unloaded.",
                )
            serving = entry.slot.current
            # From here new requests get 404; those holding the model finish on it.
            del self._entries[name]
            self._unloaded.add(name)
            await entry.slot.unload()
            self.metrics.count_operation(name, "unload", "done")
            logger.info("model unloaded", extra={"model": name})
            return serving.runtime.model if serving is not None else None

    async def stop(self) -> None:
        self._background.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for entry in reversed(list(self._entries.values())):
            await entry.slot.stop()


def _refuse(entry: StoreEntry, error: Exception) -> str:
    """Mark `entry` failed with `error` on one line, log it; the reason."""
    entry.failure = _one_line(error)
    logger.error(
        "model refused, the others serve: %s",
        entry.failure,
        extra={"model": entry.name, "model_dir": str(entry.directory)},
    )
    return entry.failure


def _check_name(name: str) -> None:
    """422 for a name that is not a model name: folder names only, so no path leaves the
    store ("..", "/", a leading dot), and no label a client could mint."""
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ApiError(
            422,
            "invalid_model_name",
            f"Not a model name ({MODEL_NAME_RULE}).",
            details=[{"loc": ["path", "name"], "msg": MODEL_NAME_RULE, "type": "model_name"}],
        )


def _one_line(error: Exception) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())
