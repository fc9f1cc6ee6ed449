"""The web page as a newcomer meets it (issue 27), in headless Chromium against an embedded
server (SQLite, a file broker, no worker) that serves the catalog entries shipped with the
repository:

- the catalog's download links and its curl and Python snippets (the `?k=` form too) work: the
  links download the served files, the copied curl commands run, the Python snippet runs;
- every view, /docs and /redoc log no error in the console at 1280 and 800 px, no view is wider
  than the window, and the catalog's previews span their row (they were a quarter of their size
  at 800 px). Screenshots at both widths under the test's tmp dir (and NADS_SCREENSHOT_DIR).

One browser and one server for the module.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.main import create_app
from jobs.shipped import install_shipped
from store.db import session_scope
from store.migrate import upgrade
from store.settings import SHIPPED_CATALOG_DIR, Settings
from tests.browser import screenshot
from tests.support import ServerThread, keyed_client, new_key

TIMEOUT_MS = 60_000
WIDTHS = (1280, 800)
K = 64  # the snippets' ?k=
SMALL_JOB = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("web-pages"),
                        catalog_shipped_dir=SHIPPED_CATALOG_DIR)
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        installed = install_shipped(session, settings)
    assert installed and all(v == "installed" for v in installed.values()), installed
    with ServerThread(create_app(settings)) as running:
        yield running.url, settings


@pytest.fixture(scope="module")
def ready(server: tuple[str, Settings]) -> list[dict]:
    entries = httpx.get(f"{server[0]}/v1/catalog", timeout=30).json()
    ready = [e for e in entries if e["status"] == "ready"]
    assert ready and all(e["num_nads"] for e in ready), entries
    return ready


def _console_errors(page: object) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: errors.append(f"{msg.text} ({msg.location.get('url')})")
            if msg.type == "error" else None)
    return errors


def test_the_icon_is_served(server: tuple[str, Settings]) -> None:
    """Browsers ask for /favicon.ico on any page that names no icon (a 404 is a console
    error); the page names its own."""
    url, _ = server
    icon = httpx.get(f"{url}/favicon.ico", timeout=30)
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg") and b"://" not in icon.content.replace(
        b"http://www.w3.org/2000/svg", b"")  # loads nothing
    assert 'rel="icon" href="/web/favicon.svg"' in httpx.get(url, timeout=30).text


def test_catalog_downloads_and_snippets_run(browser: object, server: tuple[str, Settings],
                                            ready: list[dict], tmp_path: Path) -> None:
    url, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = _console_errors(page)
    try:
        page.goto(f"{url}/#/catalog")
        page.wait_for_selector("#catalog[data-loaded=true]")
        for entry in ready:
            name, rows = entry["name"], entry["num_nads"]
            dim = int(np.prod(entry["input_shape"]))
            section = page.locator(f"section.catalog-downloads[data-arch='{name}']")
            # The links: the served files, downloaded by the browser.
            link = section.locator("a[data-file='nads.npy']")
            assert link.get_attribute("href") == f"{url}/v1/catalog/{name}/nads.npy"
            with page.expect_download() as download:
                link.click()
            saved = Path(download.value.path()).read_bytes()
            assert hashlib.sha256(saved).hexdigest() == entry["sha256"]
            href = section.locator("a[data-file='eigenvalues.npy']").get_attribute("href")
            eigenvalues = np.load(_fetch(href))
            assert eigenvalues.shape == (rows,)
            # The curl snippet, copied with its button, runs as written.
            curl = section.locator("[data-snippet=curl]")
            curl.locator("button.copy").click()
            text = page.evaluate("navigator.clipboard.readText()")
            assert text == curl.locator("pre").inner_text() and f"?k={K}" in text
            assert shutil.which("curl"), "curl is missing (apt-get install curl)"
            folder = tmp_path / name
            folder.mkdir()
            subprocess.run(["bash", "-euc", text], cwd=folder, check=True, timeout=120)
            files = {p.name: np.load(p) for p in folder.iterdir()}
            assert files["nads.npy"].shape == (rows, dim)
            assert hashlib.sha256((folder / "nads.npy").read_bytes()).hexdigest() == (
                entry["sha256"])
            np.testing.assert_array_equal(files["eigenvalues.npy"], eigenvalues)
            np.testing.assert_array_equal(files[f"{name}-nads-k{K}.npy"],
                                          files["nads.npy"][:K])
            np.testing.assert_array_equal(files[f"{name}-eigenvalues-k{K}.npy"], eigenvalues[:K])
            # The Python snippet runs as written (the client, against this server).
            python = section.locator("[data-snippet=Python] pre").inner_text()
            namespace: dict = {}
            exec(python, namespace)  # noqa: S102 - the page's own snippet is what is tested
            np.testing.assert_array_equal(namespace["nads"], files["nads.npy"][:K])
            np.testing.assert_array_equal(namespace["eigenvalues"], eigenvalues[:K])
            namespace["client"].close()
        assert errors == []
    finally:
        context.close()


def _fetch(href: str) -> io.BytesIO:
    r = httpx.get(href, timeout=60)
    assert r.status_code == 200, (href, r.status_code, r.text[:200])
    return io.BytesIO(r.content)


OVERFLOW = "() => document.documentElement.scrollWidth - window.innerWidth"
# How much narrower than the room its row offers (the row's content width, or the image's
# natural width if smaller) the most shrunk catalog preview is drawn; 0: it spans its row.
PREVIEW_SHORTFALL = """() => Math.max(...[...document.querySelectorAll('.catalog-figure img')]
  .map((img) => { const row = img.closest('.catalog-row'); const style = getComputedStyle(row);
    const room = row.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    return Math.min(img.naturalWidth, room) - img.getBoundingClientRect().width; }))"""


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_fits_and_logs_no_error(browser: object, server: tuple[str, Settings],
                                           ready: list[dict], width: int,
                                           tmp_path: Path) -> None:
    url, settings = server
    key = new_key(settings, f"web-pages-{width}")
    with keyed_client(url, key) as client:
        r = client.post("/v1/jobs/nads", json=SMALL_JOB)  # queued: no worker here
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors = _console_errors(page)
    try:
        page.goto(url + "/")
        page.wait_for_selector("#key-form")
        assert page.evaluate(OVERFLOW) <= 0
        page.fill("#api-key", key)
        page.click("#key-form button[type=submit]")
        views = {"jobs": ("#/jobs", "#jobs[data-loaded=true]"),
                 "job": (f"#/jobs/{job_id}", "#job-status [data-status]"),
                 "architectures": ("#/architectures", "#architectures[data-loaded=true]"),
                 "catalog": ("#/catalog", "#catalog[data-loaded=true]")}
        for name, (route, loaded) in views.items():
            page.goto(f"{url}/{route}")
            page.wait_for_selector(loaded)
            page.wait_for_load_state("networkidle")
            assert page.evaluate(OVERFLOW) <= 0, f"{name} at {width} px is wider than the window"
            screenshot(page, tmp_path, f"pages-{width}-{name}")
        # The catalog (the last view): previews at their row's width, snippets inside their box.
        page.wait_for_function("() => [...document.querySelectorAll('.catalog-figure img')]"
                               ".every((i) => i.complete && i.naturalWidth > 0)")
        assert page.locator(".catalog-figure img").count() == len(ready)
        assert page.evaluate(PREVIEW_SHORTFALL) <= 1, f"previews shrunk at {width} px"
        assert page.evaluate("() => Math.max(...[...document.querySelectorAll('.snippet pre')]"
                             ".map((p) => p.scrollWidth - p.clientWidth))") <= 0
        for path, loaded in (("/docs", "#swagger-ui .opblock"),
                             ("/redoc", "[data-section-id^='operation/']")):
            page.goto(url + path)
            page.wait_for_selector(loaded)
            page.wait_for_load_state("networkidle")
            screenshot(page, tmp_path, f"pages-{width}{path.replace('/', '-')}")
        assert errors == [], errors
    finally:
        context.close()
