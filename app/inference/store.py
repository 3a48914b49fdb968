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
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from app.core.config import Settings
from app.core.errors import ApiError, UnavailableError
from app.core.metrics import Metrics
from app.inference.slot import ModelSlot, ReloadError, ReloadOutcome, Serving, StreamsFactory

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


class ModelStore:
    """Every served model by name (see the module doc)."""

    def __init__(self, settings: Settings, metrics: Metrics, build_streams: StreamsFactory) -> None:
        self.settings = settings
        self.default_name = settings.default_model
        self._entries: dict[str, StoreEntry] = {
            name: StoreEntry(
                name,
                directory,
                ModelSlot(settings, metrics, build_streams, name=name, model_dir=directory),
            )
            for name, directory in settings.model_dirs().items()
        }

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
        for entry in self._entries.values():
            if entry.name == self.default_name:
                continue
            try:
                await entry.slot.start()
            except Exception as error:
                entry.failure = " ".join(f"{type(error).__name__}: {error}".split())
                logger.error(
                    "model refused, the others serve: %s",
                    entry.failure,
                    extra={"model": entry.name, "model_dir": str(entry.directory)},
                )
            else:
                logger.info("model ready", extra={"model": entry.name})
        return serving

    async def reload(self, name: str | None = None) -> dict[str, ReloadOutcome | ReloadError]:
        """Reload model `name`, or every model: each one's outcome, or the error that kept its
        previous version serving. A model that failed at start-up is loaded afresh."""
        entries = [self.entry(name)] if name is not None else list(self._entries.values())
        outcomes: dict[str, ReloadOutcome | ReloadError] = {}
        for entry in entries:
            try:
                if entry.slot.current is None:
                    serving = await entry.slot.start()
                    entry.failure = None
                    model = serving.runtime.model
                    outcomes[entry.name] = ReloadOutcome(True, model, model, 0.0)
                else:
                    outcomes[entry.name] = await entry.slot.reload()
            except ReloadError as error:
                outcomes[entry.name] = error
            except Exception as error:
                entry.failure = " ".join(f"{type(error).__name__}: {error}".split())
                outcomes[entry.name] = ReloadError(entry.failure)
        return outcomes

    def reload_in_background(self) -> None:
        """SIGHUP: reload every model, outcomes to the log."""
        for entry in self._entries.values():
            if entry.slot.current is not None:
                entry.slot.reload_in_background()

    async def stop(self) -> None:
        for entry in reversed(list(self._entries.values())):
            await entry.slot.stop()
