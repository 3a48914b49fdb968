"""Bounds that depend on settings, declared on the fields they bound.

A request field whose bound a deployment configures (the longest text, the most texts, ...)
says which setting bounds it: `Field(json_schema_extra=settings_bound(maxLength=
"max_text_chars"))`. Pydantic copies the marker into the field's JSON Schema wherever the field
appears, and `app.openapi` replaces it by the running instance's value when it builds
/openapi.json. The bound itself is checked where the request is served, not by pydantic, so a
text over it gets the same error on every route.
"""

from __future__ import annotations

from typing import Any

# The JSON Schema extension keyword that carries the marker; it never reaches a client.
MARKER = "x-limit"


def settings_bound(**bounds: str) -> dict[str, Any]:
    """`json_schema_extra` for a field bounded by settings: JSON Schema keyword -> name of the
    `Settings` field, e.g. `settings_bound(maxItems="max_texts")`."""
    return {MARKER: dict(bounds)}
