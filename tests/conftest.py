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


# The longest files, longest first: per-file totals (setup, call and teardown) of a
# three-process run (--durations=0, summed per file), 2026-12-07, beside the catalog builds and
# a benchmark (load 5-10). A file missing here (a new one) runs after them if it holds a slow
# test; re-measure and update when a file's time changes much.
LONGEST_FIRST = (
    "tests.service.test_sandbox",  # 383 s
    "tests.service.test_recovery",  # 357 s
    "tests.service.test_readme",  # 332 s
    "tests.service.test_notebook",  # 292 s
    "tests.nadcore.probe.test_probe",  # 291 s
    "tests.service.test_architectures_e2e",  # 176 s
    "tests.service.test_catalog",  # 170 s
    "tests.service.test_fairness",  # 162 s
    "tests.service.test_cli_client",  # 159 s
    "tests.nadcore.uploaded.test_untrusted",  # 148 s
    "tests.service.test_engine_assumptions_e2e",  # 145 s
    "tests.service.test_worker_layout",  # 143 s
    "tests.nadcore.nads.test_gradients",  # 140 s
    "tests.service.test_faults",  # 129 s
    "tests.service.test_budgets",  # 122 s
    "tests.service.test_estimates",  # 110 s
    "tests.nads.test_catalog_background",  # 93 s
    "tests.service.test_s3_e2e",  # 90 s
    "tests.service.test_poison_e2e",  # 71 s
    "tests.worker.test_result_bounds",  # 66 s
    "tests.api.test_fuzz",  # 65 s
    "tests.service.test_learning_e2e",  # 64 s
    "tests.service.test_validation_fairness",  # 60 s
    "tests.worker.test_sandbox_cgroup",  # 60 s
    "tests.service.test_web",  # 59 s
    "tests.worker.test_sandbox_escape",  # 56 s
    "tests.service.test_jobs_e2e",  # 53 s
    "tests.test_ci_skips",  # 53 s
    "tests.nads.test_catalog_data",  # 53 s
    "tests.service.test_probe_e2e",  # 49 s
    "tests.service.test_identifiability_e2e",  # 44 s
    "tests.api.test_request_limits",  # 40 s
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
