"""GET /: the hidden-state explorer, one page that calls the API from the browser.

The page and its assets (`app/static/explorer/`, mounted at `/explorer`) are the service's
own: a Content-Security-Policy lets the browser load nothing from anywhere else.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE_DIR = Path(__file__).resolve().parents[2] / "static" / "explorer"
ASSETS_PATH = "/explorer"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def build_router() -> APIRouter:
    """A router serving the page (read once, here, not at import time)."""
    html = (PAGE_DIR / "index.html").read_text(encoding="utf-8")
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def explorer_page() -> HTMLResponse:
        """The hidden-state explorer."""
        return HTMLResponse(html, headers=headers)

    return router
