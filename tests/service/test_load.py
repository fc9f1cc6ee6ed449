"""A short run of benchmarks/load_test.py (the full one is 100 clients for 60 s): as many
concurrent clients, each polling a job's status and downloading its 4 MB .npy, for 20 s on
loopback. Zero errors allowed; the figures are printed. At least 100 requests of each kind:
as many as clients, so the run exercised both under full concurrency. 20 s, not 8, because the
suite runs in two processes on two cores: in 8 s beside the other one, 91 downloads ended."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures import PG_ADMIN
from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_100_clients_polling_and_downloading_see_no_error(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "load_test.py"), "--clients", "100",
         "--duration", "20", "--pg", PG_ADMIN, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.exists(), run.stdout + run.stderr
    figures = json.loads(out.read_text())
    print(f"\nload (100 clients, 20 s): {figures['requests']} requests, "
          f"{figures['requests_per_s']} req/s, {figures['mib_per_s']} MiB/s; status p50/p99 "
          f"{figures['status']['p50_ms']}/{figures['status']['p99_ms']} ms, download p50/p99 "
          f"{figures['download']['p50_ms']}/{figures['download']['p99_ms']} ms; "
          f"errors {figures['errors']}")
    assert figures["errors"] == 0, figures["error_samples"]
    assert run.returncode == 0
    assert figures["status"]["requests"] >= 100 and figures["download"]["requests"] >= 100
