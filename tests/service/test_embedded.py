"""The embedded default (`nads serve`: SQLite, kombu's filesystem broker, a supervised worker)
and `nads admin create-key`, as the user runs them: subprocesses talking HTTP."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from store.settings import Settings

from .support import ROOT, free_port, reference, settings_env, wait_for_job

NADS = str(Path(sys.executable).with_name("nads"))
SPEC = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 30, "seed": 4,
        "shards": 2}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    return env | {"OMP_NUM_THREADS": "1"}  # as `reference` computes (see support.py)


@pytest.mark.slow
def test_nads_serve_runs_a_job_end_to_end_with_no_server(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([NADS, "serve", "--port", str(port)], cwd=tmp_path,
                            env=_clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("local API key:") for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        banner = "".join(lines)
        assert f"http://127.0.0.1:{port}" in banner
        key = lines[-1].split()[-1]
        data = tmp_path / "var"
        assert (data / "nads.db").is_file() and (data / "broker" / "queue").is_dir()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text
            r = client.post("/v1/jobs/nads", json=SPEC)
            assert r.status_code == 202, r.text
            job = wait_for_job(client, r.json()["id"], timeout=150)
            assert job["status"] == "succeeded", (job, (data / "worker.log").read_text()[-3000:])
            nads = client.get(f"/v1/jobs/{job['id']}/artifacts/nads.npy")
            assert nads.status_code == 200
            expected = reference(SPEC)["nads"]
            np.testing.assert_array_equal(np.load(io.BytesIO(nads.content)), expected)
        blob = next((data / "blobs").glob(f"*/{job['artifacts'][0]['sha256']}"))
        assert blob.stat().st_size == job["artifacts"][0]["size"]
        worker_pids = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert worker_pids, "no supervised worker process"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
    time.sleep(0.5)
    assert not [p for p in worker_pids if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE], "worker left running"


def test_admin_create_key_prints_a_working_key_last(settings: Settings, api_url: str) -> None:
    out = subprocess.run([NADS, "admin", "create-key", "--name", "carol"], cwd=ROOT,
                         env=settings_env(settings), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key = out.stdout.split()[-1]
    assert key.startswith("nads_") and "carol" in out.stdout
    r = httpx.get(api_url + "/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["items"] == []
