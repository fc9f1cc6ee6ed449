"""A worker calibrates (worker/calibrate.py) only if it takes shards: the validation lane's rate
is read by nothing, and measuring it cost every `nads serve` a core for seconds at its start.
Checked through the worker's own start-up hook (worker/app.py `_on_ready`), in a process of
its own (importing the worker's application reads the settings), on an empty SQLite service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from worker.calibrate import calibrates

READY = """
import json, sys, types
from store.migrate import upgrade
from store.settings import get_settings
upgrade(get_settings().resolved_database_url)
import worker.app, worker.calibrate
started = []
worker.calibrate.start_calibration = lambda settings, name: started.append(name)
for name, queues in json.loads(sys.argv[1]):
    consumer = types.SimpleNamespace(
        hostname=name, controller=types.SimpleNamespace(concurrency=1),
        app=types.SimpleNamespace(amqp=types.SimpleNamespace(
            queues=types.SimpleNamespace(consume_from=dict.fromkeys(queues.split(","))))))
    worker.app._on_ready(sender=consumer)
worker.app._on_shutdown()
print(json.dumps(started))
"""


@pytest.mark.parametrize(("queues", "expected"), [
    ("validate", False), ("gpu,cpu", True), ("gpu,cpu,catalog", True), ("catalog", True),
    ("gpu,cpu,catalog,validate", True)])
def test_only_a_worker_that_takes_shards_calibrates(queues: str, expected: bool) -> None:
    assert calibrates(queues.split(",")) is expected


def test_the_validation_lane_starts_no_calibration_the_others_do(tmp_path: Path) -> None:
    workers = [["embedded-validate@h", "validate"], ["embedded-users@h", "gpu,cpu"],
               ["embedded@h", "gpu,cpu,catalog"]]
    out = subprocess.run([sys.executable, "-c", READY, json.dumps(workers)],
                         capture_output=True, text=True, timeout=180,
                         env={"NADS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.splitlines()[-1]) == ["embedded-users@h", "embedded@h"]
