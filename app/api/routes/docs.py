"""GET /docs and /redoc: API documentation pages, with their assets served by the app."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

STATIC = "/static"
DOCS_PATH = "/docs"  # 404 and 405 answers point here (app.http.errors)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI."""
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{STATIC}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{STATIC}/swagger-ui/favicon-32x32.png",
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc."""
    return get_redoc_html(
        openapi_url=request.app.openapi_url,
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{STATIC}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{STATIC}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
