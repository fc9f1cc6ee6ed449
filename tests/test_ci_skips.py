"""tests/conftest.py: with CI=true a skip fails unless it is allowed with a reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = '''
import pytest

def test_skips():
    pytest.skip("no tool here")

@pytest.mark.skipif(True, reason="never here")
def test_skipif():
    pass

@pytest.mark.allow_skip_in_ci(reason="needs a GPU")
def test_allowed():
    pytest.skip("no GPU")

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False

def test_runs():
    pass
'''


def _run(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "test_cases.py").write_text(CASES)
    # only tests.conftest (named with -p) matters here: no plugin is autoloaded (schemathesis,
    # playwright, ... would take ~90 % of each run's start-up)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    if ci is not None:
        env["CI"] = ci
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p",
         "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_cases.py")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    return proc.stdout


@pytest.mark.parametrize("ci", ["true", "1"])
def test_in_ci_a_skip_fails_unless_allowed(tmp_path, ci):
    out = _run(tmp_path, ci)
    assert "FAILED" in out and "test_cases.py::test_skips" in out
    # a skip in the call fails; a skipif (decided at setup) errors: both fail the run
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 1 error" in out, out
    assert "skipped in CI" in out and "no tool here" in out


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_skips_stay_skips(tmp_path, ci):
    out = _run(tmp_path, ci)
    assert "1 passed, 3 skipped, 1 xfailed" in out, out
