"""Suite-wide rules.

No silent skips in CI: CI sets CI=true. There a skipped test is a test that did not run, so it
fails, unless it is marked `@pytest.mark.allow_skip_in_ci(reason="...")` with the reason it may
not run in CI (e.g. it needs a GPU). xfail is not a skip and is left alone; deselection (-m) is
not a skip.

One intra-op thread per test process (unless OMP_NUM_THREADS is set): the test workers
(pytest-xdist) and the Celery workers the service tests start share the cores, and torch's
threads collapse under contention (a LeNet probe test: 5.7 s on one thread, 15.6 s on two
with one other process running). The workers compute with one thread too, so bitwise
comparisons with them hold.

Modules that hold a slow test run first, so that under pytest-xdist the long files start at
once instead of forming the tail of the run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported by any test module

import pytest  # noqa: E402


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_skip_in_ci(reason): this test may skip in CI (CI=true); the reason says why",
    )


def _allowed(item: pytest.Item) -> bool:
    mark = item.get_closest_marker("allow_skip_in_ci")
    if mark is None:
        return False
    reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "")
    if not str(reason).strip():
        raise pytest.UsageError(f"{item.nodeid}: allow_skip_in_ci needs a reason")
    return True


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if (report.skipped and not hasattr(report, "wasxfail") and _in_ci()
            and not _allowed(item)):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI (CI={os.environ.get('CI')}): {reason}\n"
                           "a test that cannot run in CI fails there; mark it "
                           "@pytest.mark.allow_skip_in_ci(reason=...) if that is intended")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci():  # a whole module skipped (importorskip, module-level skip)
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"module skipped in CI: {reason}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_modules = {item.module.__name__ for item in items
                    if item.get_closest_marker("slow") and getattr(item, "module", None)}
    items.sort(key=lambda item: getattr(item, "module", None) is None
               or item.module.__name__ not in slow_modules)
