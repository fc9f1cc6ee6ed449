"""The end-to-end tests' own fixtures: a real Celery worker subprocess on the session's database
and broker (tests/fixtures.py), and a headless browser per test module (tests/browser.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from store.settings import Settings
from tests.browser import chromium
from tests.support import celery_worker


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[subprocess.Popen]:
    """A real Celery worker in the default layout: prefork (soft time limits need it), one
    1-thread child per usable core."""
    with celery_worker(settings) as proc:
        yield proc


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Chromium, one launch per test module."""
    with chromium() as launched:
        yield launched
