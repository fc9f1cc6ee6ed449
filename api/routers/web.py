"""The web page: `GET /` serves one static page (api/web/index.html, vanilla JS, no build
chain) that reads the JSON API with the user's key and shows jobs, their figures and the
catalog. The figures are PNG artifacts the worker rendered once; the page itself draws only a
NAD job's gallery of any number of NADs, from the rows of its nads.npy (api/web/views.js)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import RedirectResponse

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "views.js": "text/javascript; charset=utf-8",
          "catalog.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}

# The page loads only its own script and style; images come from the API as blob: URLs
# (artifacts need the key) or straight from it (the public catalog).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer"}

router = APIRouter(tags=["web"], include_in_schema=False)


def _serve(request: Request, name: str, media_type: str, headers: dict[str, str]) -> Response:
    """A small file, revalidated on every load (no-cache) against a content ETag (304)."""
    body = (WEB_DIR / name).read_bytes()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = headers | {"ETag": etag}
    candidates = {t.strip().removeprefix("W/")
                  for t in request.headers.get("if-none-match", "").split(",")}
    if etag in candidates:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
def index(request: Request) -> Response:
    """The page; the key it asks for stays in the browser (localStorage), never in a URL."""
    return _serve(request, "index.html", "text/html; charset=utf-8",
                  HEADERS | {"Content-Security-Policy": CSP})


@router.get("/favicon.ico")
def favicon(request: Request) -> Response:
    """The page's icon, also where browsers look for one unasked (a 404 there is a console
    error on every page that names no icon: /openapi.json, error pages). An SVG: the media
    type, not the name, tells the browser what it is."""
    return _serve(request, "favicon.svg", ASSETS["favicon.svg"], HEADERS)


@router.get("/web")
def web_root() -> RedirectResponse:
    return RedirectResponse("/", status_code=status.HTTP_308_PERMANENT_REDIRECT)


@router.get("/web/{name}")
def asset(name: str, request: Request) -> Response:
    """The page's script and style sheet."""
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            detail=f"asset {name!r} not found; assets: {', '.join(ASSETS)}")
    return _serve(request, name, ASSETS[name], HEADERS)
