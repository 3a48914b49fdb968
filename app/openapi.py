"""/openapi.json with the limits this instance enforces written in.

Request fields bounded by a setting carry a marker naming it (`app.api.schemas.bounds`).
`openapi_with_limits` takes FastAPI's generated document, walks all of it once, and replaces
each marker by the bound it names, read from the running instance's settings. No component
or field is named here: a newly bounded field only declares its marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from app.api.schemas.bounds import MARKER
from app.core.config import Settings


def openapi_with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """A replacement for `app.openapi`: FastAPI's document (which FastAPI caches, and makes
    anew when the routes change), its markers resolved once per document."""
    generate = app.openapi
    resolved: list[dict[str, Any]] = []  # the document last resolved

    def openapi() -> dict[str, Any]:
        document = generate()
        if not resolved or resolved[0] is not document:
            resolve_limits(document, settings)
            resolved[:] = [document]
        return document

    return openapi


def resolve_limits(document: Any, settings: Settings) -> None:
    """Replace every marker in `document`, in place, by the bounds it names."""
    pending = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            bounds = node.pop(MARKER, None)
            if bounds is not None:
                for keyword, name in bounds.items():
                    node[keyword] = _setting(settings, name)
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _setting(settings: Settings, name: str) -> int | float:
    value = getattr(settings, name, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{MARKER} names {name!r}, which is not a numeric setting")
    return value
