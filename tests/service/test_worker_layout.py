"""`nads serve` lays its worker out for the machine (worker/layout.py): on the CPU, one process
per usable core, each with one intra-op thread, and a job's shards run on them at once."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import httpx
import psutil
import pytest

from nadcore import PartialNADs
from nadcore.cores import usable_cores

from .support import clean_env, nads_serve, wait_for_job

# two shards of ~40 LeNets (finite differences, 1x32x32): a few seconds each on one core
SPEC = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 80, "seed": 3,
        "shards": 2}


def _worker_children(serve_pid: int) -> list[psutil.Process]:
    """The processes of the supervised celery worker: its pool and its embedded beat."""
    (worker,) = psutil.Process(serve_pid).children()
    return worker.children()


@pytest.mark.slow
@pytest.mark.skipif(usable_cores() < 2, reason="needs 2 usable cores to run shards at once")
def test_embedded_worker_runs_one_single_thread_process_per_core(tmp_path: Path) -> None:
    env = clean_env(NADS_CATALOG_AUTOBUILD="")
    env.pop("OMP_NUM_THREADS")  # the launcher, not the caller, sets the threads
    with nads_serve(tmp_path, env) as serve:
        with httpx.Client(base_url=serve.url, timeout=30,
                          headers={"Authorization": f"Bearer {serve.key}"}) as client:
            r = client.post("/v1/jobs/nads", json=SPEC)
            assert r.status_code == 202, r.text
            job = wait_for_job(client, r.json()["id"], timeout=240)
        log = (tmp_path / "var" / "worker.log").read_text()
        assert job["status"] == "succeeded", (job, log[-3000:])
        assert f"nads worker: {usable_cores()} process(es) x 1 thread(s) (CPU)" in log
        children = _worker_children(serve.proc.pid)
        assert len(children) == usable_cores() + 1  # the pool, and beat (-B)
        for proc in children:
            assert proc.environ().get("OMP_NUM_THREADS") == "1", proc.environ()
    with sqlite3.connect(tmp_path / "var" / "nads.db") as db:
        rows = db.execute("SELECT s.started_at, s.finished_at, s.partial_sha256 FROM shards s "
                          "JOIN jobs j ON s.job_pk = j.pk WHERE j.id = ? ORDER BY s.\"index\"",
                          (job["id"],)).fetchall()
    assert len(rows) == 2
    spans = [(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b, _ in rows]
    assert max(a for a, _ in spans) < min(b for _, b in spans), f"shards ran one after the " \
        f"other: {spans}"
    for _, _, sha in rows:  # each shard's partial records the threads its process used
        blob = next((tmp_path / "var" / "blobs").glob(f"*/{sha}"))
        assert PartialNADs.load(blob).meta["plan"]["threads"] == 1
