"""/docs and /redoc without internet: the pages name no other host, their assets come from the
server itself (the installed fastapi-offline package; ReDoc's script with its CDN logo replaced),
and in headless Chromium with every request to another host aborted Swagger UI and ReDoc render
the API's operations with no error in the console (issue 27: ReDoc's logo broke the page's own
policy on every load).

The server runs on embedded defaults (SQLite, a file broker): nothing here needs a worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.main import create_app
from api.routers.docs import ASSETS, PATCHES, assets_dir, patched
from store.settings import Settings
from tests.browser import chromium, screenshot
from tests.support import ServerThread

REFERENCE = re.compile(r"""(?:src|href|spec-url|url)\s*[=:]\s*['"]([^'"]+)['"]""")


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("docs-offline")
    with ServerThread(create_app(Settings(data_dir=data))) as server:
        yield server.url


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_pages_reference_only_this_server(docs_server: str, page: str) -> None:
    with httpx.Client(base_url=docs_server, timeout=30) as client:
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "://" not in r.text, "the page names another host"
        # and the browser may fetch nothing elsewhere (ReDoc's logo is on its vendor's CDN)
        csp = r.headers["content-security-policy"]
        assert "img-src 'self' data:" in csp and "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp, csp  # not framed by another site
        assert r.headers["x-content-type-options"] == "nosniff"
        refs = REFERENCE.findall(r.text)
        assert "/openapi.json" in refs
        scripts = [u for u in refs if u.endswith(".js")]
        assert scripts and all(u.startswith("/docs/assets/") for u in scripts), refs
        for url in refs:
            assert url.startswith("/"), url
            got = client.get(url)
            assert got.status_code == 200, (url, got.status_code)
            assert len(got.content) > 1000
            if url.startswith("/docs/assets/"):
                name = url.rsplit("/", 1)[1]
                assert got.headers["content-type"] == ASSETS[name]
                shipped = (assets_dir() / name).read_bytes()
                assert got.content == (patched(name) if name in PATCHES else shipped)
                assert b"cdn.redoc.ly/redoc/logo" not in got.content


def test_only_the_listed_assets_are_served(docs_server: str) -> None:
    with httpx.Client(base_url=docs_server, timeout=30) as client:
        for name in ASSETS:
            r = client.get(f"/docs/assets/{name}")
            assert r.status_code == 200 and r.headers["etag"]
        for name in PATCHES:  # served from memory: its ETag is the patched content's
            etag = client.get(f"/docs/assets/{name}").headers["etag"]
            again = client.get(f"/docs/assets/{name}", headers={"If-None-Match": etag})
            assert again.status_code == 304 and not again.content, name
        for name in ("core.py", "..%2Fcore.py", "../__init__.py", "swagger-ui.js.map"):
            r = client.get(f"/docs/assets/{name}")
            assert r.status_code == 404, name
        assert "swagger-ui-bundle.js" in client.get("/docs/assets/core.py").json()["detail"]
        assert client.get("/docs/oauth2-redirect").status_code == 200


@pytest.mark.parametrize(("page", "operation"), [
    ("/docs", "#swagger-ui .opblock"),
    ("/redoc", "[data-section-id^='operation/']"),
])
def test_documentation_renders_without_network(docs_server: str, tmp_path: Path, page: str,
                                               operation: str) -> None:
    here = urlsplit(docs_server).netloc
    blocked: list[str] = []
    served: list[str] = []

    def only_this_server(route: object, request: object) -> None:
        if urlsplit(request.url).netloc == here:
            served.append(request.url)
            route.continue_()
        else:
            blocked.append(request.url)
            route.abort("internetdisconnected")

    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.route("**/*", only_this_server)
        view = context.new_page()
        errors: list[str] = []
        view.on("pageerror", lambda exc: errors.append(str(exc)))
        view.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}")
                if msg.type == "error" else None)
        view.goto(docs_server + page)
        view.wait_for_selector(operation, timeout=60_000)
        view.wait_for_load_state("networkidle")  # the icon and the footer's image too
        count = view.locator(operation).count()
        text = view.inner_text("body")
        screenshot(view, tmp_path, f"docs-offline{page.replace('/', '-')}")
    assert count >= 20, f"{count} operations rendered"
    assert "/v1/jobs/nads" in text and "/v1/catalog" in text
    assert blocked == [], f"requests to other hosts: {blocked}"
    assert errors == []
    assert any(u.endswith("/openapi.json") for u in served)
