"""/docs (Swagger UI) and /redoc (ReDoc) that work without internet: their scripts, style sheet
and icon come from the installed `fastapi-offline` package (MIT; it ships current builds of
swagger-ui-dist 5 and redoc 2 as plain files), served here under /docs/assets/, instead of
FastAPI's default page, which loads them from a CDN and is blank on a machine offline.

Only the HTML pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`); nothing of
fastapi-offline is imported, its static folder is only read.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

ASSETS_URL = "/docs/assets"
ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8",
          "redoc.standalone.js": "text/javascript; charset=utf-8",
          "favicon.png": "image/png"}
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
# Swagger UI asks validator.swagger.io about the schema unless told not to.
SWAGGER_PARAMETERS = {"validatorUrl": None}
CACHE_CONTROL = "public, max-age=86400"
# The pages reach only this server: ReDoc 2 shows a logo from its vendor's CDN (and hides it
# when that fails); this keeps the browser from asking at all. Scripts and styles stay as the
# two pages write them (inline).
CSP = "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; form-action 'self'"

router = APIRouter(include_in_schema=False)


def assets_dir() -> Path:
    """The static folder of the installed fastapi-offline package (not imported: located)."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise RuntimeError("the fastapi-offline package is not installed: "
                           "pip install -e . installs it (pyproject.toml)")
    return Path(spec.origin).parent / "static"


def _offline(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def _title(request: Request, what: str) -> str:
    return f"{request.app.title} - {what}"


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _offline(get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=_title(request, "Swagger UI"),
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        swagger_ui_parameters=SWAGGER_PARAMETERS))


@router.get(OAUTH2_REDIRECT_URL)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _offline(get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=_title(request, "ReDoc"),
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False))


@router.get(ASSETS_URL + "/{name}")
def asset(name: str) -> FileResponse:
    """One of the four files, with its ETag and a day's caching."""
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"name: {name[:80]!r} is not a documentation asset; "
                            f"assets: {', '.join(ASSETS)}")
    return FileResponse(assets_dir() / name, media_type=ASSETS[name],
                        headers={"Cache-Control": CACHE_CONTROL})
