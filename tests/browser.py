"""Headless Chromium for the tests of the web page and the API's documentation: Debian's
`chromium` driven by Playwright (scripts/install.sh installs both), and screenshots kept under
the test's tmp dir and, when set, NADS_SCREENSHOT_DIR. tests/service/conftest.py's `browser`
fixture is one launch per test module."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = os.environ.get("NADS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextmanager
def chromium() -> Iterator[object]:
    """A launched headless Chromium (a Playwright `Browser`), closed on exit."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} is missing: `apt-get install -y chromium chromium-driver` "
        "(scripts/install.sh does it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: object, tmp: Path, name: str) -> Path:
    """A full-page PNG of `page`, `tmp`/`name`.png, copied to NADS_SCREENSHOT_DIR when set."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    extra = os.environ.get("NADS_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    return path
