"""Fixtures for the app tests: settings for a tiny checkpoint and an in-process client.

The client talks to the real app through httpx's ASGI transport, inside
`asgi_lifespan.LifespanManager` so the lifespan (load, verify, warm up) really runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.core.config import Settings
from app.main import create_app

SettingsFactory = Callable[..., Settings]
ServeFactory = Callable[..., Any]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def make_settings(checkpoints: dict[str, Path]) -> SettingsFactory:
    """Settings for the `kind` tiny checkpoint, with overrides."""

    def make(kind: str = "lstm", **overrides: Any) -> Settings:
        values: dict[str, Any] = {"model_dir": checkpoints[kind], "gc_freeze": False}
        values.update(overrides)
        return Settings(**values)

    return make


@asynccontextmanager
async def serve_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as client,
    ):
        yield client


@pytest.fixture
def serve(make_settings: SettingsFactory) -> Callable[..., Any]:
    """`async with serve(kind, **overrides) as client:` a started app."""

    def start(kind: str = "lstm", **overrides: Any) -> Any:
        return serve_app(make_settings(kind, **overrides))

    return start


@pytest.fixture
async def client(make_settings: SettingsFactory) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app serving the tiny 2-layer LSTM with default settings."""
    async with serve_app(make_settings("lstm")) as started:
        yield started
