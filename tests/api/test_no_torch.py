"""The API never imports torch, not even transitively (its image has no torch), nor matplotlib
(the figures are drawn by the worker, `nadcore.figures`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import sys
from fastapi.testclient import TestClient
from api.main import create_app
from store.settings import Settings
import tempfile, pathlib
d = pathlib.Path(tempfile.mkdtemp())
app = create_app(Settings(data_dir=d))
with TestClient(app) as client:
    assert client.get("/healthz").status_code == 200
    assert client.get("/openapi.json").status_code == 200
    r = client.post("/v1/jobs/nads", json={"architecture": "lenet"})
    assert r.status_code == 401, r.text
import nads.service_commands, worker.app, jobs.broker, jobs.dispatch, worker.reconcile
import store.migrate
# `nads admin ...` runs in the torch-free API image too.
from nads.cli import build_app
build_app()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
print("TORCH:", loaded)
print("MATPLOTLIB:", sorted(m for m in sys.modules if m.split(".")[0] == "matplotlib"))
"""


def test_api_and_its_imports_load_no_torch_nor_matplotlib(tmp_path: Path) -> None:
    # worker.app prepares the embedded broker folder under NADS_DATA_DIR when imported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=env | {"NADS_DATA_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert "TORCH: []" in out.stdout, out.stdout
    assert "MATPLOTLIB: []" in out.stdout, out.stdout
