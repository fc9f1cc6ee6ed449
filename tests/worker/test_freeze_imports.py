"""At `worker_init` (the task modules and torch imported, the pool not forked yet) the worker
freezes what it has imported out of garbage collection (worker/app.py `_freeze_imports`): no
collection walks it again, in the worker or its forked children, nor does the worker's exit
(about 1.3 s less CPU per worker over its start, calibration and stop on this machine). In a
process of its own: importing the worker's application reads the settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

INIT = """
import gc, json
import worker.app
from celery.signals import worker_init
before = gc.get_freeze_count()
worker_init.send(sender=None)
app_module = vars(worker.app)
tracked = any(o is app_module for o in gc.get_objects())
print(json.dumps([before, gc.get_freeze_count(), tracked]))
"""


def test_worker_init_freezes_what_the_worker_imported(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", INIT], capture_output=True, text=True,
                         timeout=180, env={"NADS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    before, after, tracked = json.loads(out.stdout.splitlines()[-1])
    assert before == 0
    assert after > 10_000, after  # the worker's modules and torch's: ~200,000 here
    assert not tracked, "the worker's own module namespace is still walked by collections"
