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

Under pytest-xdist (`--dist loadfile`, scripts/test.sh) the longest files start first, so that
they do not form the tail of the run: the files of LONGEST_FIRST in that order, then the other
modules that hold a slow test, then the rest. xdist's own reordering (by number of tests per
file, `--loadscope-reorder`, on by default) is switched off here: it put the long files of one
to three tests (recovery, fairness, the notebook) last, where one process ran them alone for
minutes while the other had finished.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported by any test module

import pytest  # noqa: E402

# The session fixtures of the API, store and service tests (Postgres, Redis, the API served).
pytest_plugins = ("tests.fixtures",)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


# The longest files, longest first: per-file totals of a two-process run (--junitxml, summed
# per file), 2026-12-06. A file missing here (a new one) runs after them if it holds a slow
# test; re-measure and update when a file's time changes much.
LONGEST_FIRST = (
    "tests.service.test_recovery",
    "tests.service.test_notebook",
    "tests.service.test_sandbox",
    "tests.service.test_readme",  # 229 s (2026-12-06, three processes, an AVX2-only EPYC)
    "tests.service.test_faults",
    "tests.service.test_fairness",
    "tests.service.test_budgets",
    "tests.service.test_engine_assumptions_e2e",
    "tests.service.test_architectures_e2e",
    "tests.nadcore.probe.test_probe",
    "tests.service.test_cli_client",
    "tests.service.test_catalog",
    "tests.service.test_s3_e2e",
    "tests.service.test_worker_layout",
    "tests.service.test_estimates",
    "tests.service.test_web",
    "tests.service.test_learning_e2e",
    "tests.nads.test_catalog_data",
    "tests.nadcore.nads.test_precision",
    "tests.nadcore.nads.test_engine",
    "tests.service.test_catalog_shipped",
    "tests.service.test_poison_e2e",
    "tests.nadcore.nads.test_gradients",
    "tests.worker.test_result_bounds",
    "tests.service.test_embedded",
    "tests.test_ci_skips",
    "tests.api.test_fuzz",
    "tests.nads.test_catalog_background",
    "tests.service.test_jobs_e2e",
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep our order
        config.option.loadscopereorder = False
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


def _module(item: pytest.Item) -> str | None:
    module = getattr(item, "module", None)
    return None if module is None else module.__name__


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    slow_modules = {_module(item) for item in items if item.get_closest_marker("slow")}

    def order(item: pytest.Item) -> tuple[int, int]:
        name = _module(item)
        if name in rank:
            return 0, rank[name]
        return (1 if name in slow_modules else 2), 0

    items.sort(key=order)  # stable: a file's tests keep their order
