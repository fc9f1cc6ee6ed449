"""/docs (Swagger UI) and /redoc (ReDoc) that work without internet: their scripts, style sheet
and icon come from the installed `fastapi-offline` package (MIT; it ships current builds of
swagger-ui-dist 5 and redoc 2 as plain files), served here under /docs/assets/, instead of
FastAPI's default page, which loads them from a CDN and is blank on a machine offline.

Only the HTML pages are FastAPI's own (`get_swagger_ui_html`, `get_redoc_html`); nothing of
fastapi-offline is imported, its static folder is only read. One asset is served changed
(`PATCHES`): ReDoc 2 draws its vendor's logo from a CDN in the sidebar's "API docs by Redocly"
footer, with no option to turn it off; the page's policy blocked that (a console error on every
load, and a request to another host without it), so the served script names a blank inline
image instead, as the footer shows offline anyway (it hides the logo when it fails).
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, Response

ASSETS_URL = "/docs/assets"
ASSETS = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8",
          "redoc.standalone.js": "text/javascript; charset=utf-8",
          "favicon.png": "image/png"}
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
# Swagger UI asks validator.swagger.io about the schema unless told not to.
SWAGGER_PARAMETERS = {"validatorUrl": None}
CACHE_CONTROL = "public, max-age=86400"
# A transparent 1x1 GIF: what ReDoc's footer shows instead of its logo (img-src allows data:).
BLANK_IMAGE = b"data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
PATCHES = {"redoc.standalone.js": [(b"https://cdn.redoc.ly/redoc/logo-mini.svg", BLANK_IMAGE)]}
# The pages reach only this server: ReDoc 2 shows a logo from its vendor's CDN (and hides it
# when that fails); this keeps the browser from asking at all. Scripts and styles stay as the
# two pages write them (inline).
# Not framed by another site (the pages share their origin with the web page, which keeps the
# API key in the browser's storage: a framing page could lead a user's clicks), no other <base>.
CSP = ("img-src 'self' data:; connect-src 'self'; font-src 'self' data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

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
    page.headers["X-Content-Type-Options"] = "nosniff"
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
    return _offline(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _offline(get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}", title=_title(request, "ReDoc"),
        redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False))


@cache
def patched(name: str) -> bytes:
    """An asset of PATCHES as served: its file with each of its replacements made (a
    replacement whose text the installed version lacks is an error: the patch would be
    silently void)."""
    body = (assets_dir() / name).read_bytes()
    for old, new in PATCHES[name]:
        if old not in body:
            raise RuntimeError(f"{name}: {old.decode()!r} not found: fastapi-offline changed; "
                               "update api/routers/docs.py PATCHES")
        body = body.replace(old, new)
    return body


@router.get(ASSETS_URL + "/{name}")
def asset(name: str, request: Request) -> Response:
    """One of the four files, with its ETag and a day's caching."""
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"name: {name[:80]!r} is not a documentation asset; "
                            f"assets: {', '.join(ASSETS)}")
    if name not in PATCHES:
        return FileResponse(assets_dir() / name, media_type=ASSETS[name],
                            headers={"Cache-Control": CACHE_CONTROL})
    body = patched(name)
    headers = {"Cache-Control": CACHE_CONTROL,
               "ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"'}
    if headers["ETag"] in request.headers.get("if-none-match", ""):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=ASSETS[name], headers=headers)
