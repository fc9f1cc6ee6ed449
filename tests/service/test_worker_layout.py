"""`nads serve` lays its workers out for the machine (worker/layout.py): on the CPU, one process
per usable core, each with one intra-op thread; a job's shards run on them at once, and on 2
cores a user's job runs on one while the catalog builds on the other."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

from nadcore import PartialNADs
from nadcore.cores import usable_cores
from tests.support import clean_env, keyed_client, nads_serve, wait_for_job

# two shards of ~40 LeNets (finite differences, 1x32x32): a few seconds each on one core
SPEC = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 80, "seed": 3,
        "shards": 2}
def needs_two_cores(test):  # on one core nads serve runs a single worker: nothing to test here
    reason = "needs 2 usable cores (on one, nads serve runs a single worker)"
    return pytest.mark.allow_skip_in_ci(reason=reason)(
        pytest.mark.skipif(usable_cores() < 2, reason=reason)(test))


def _env(**extra: str) -> dict[str, str]:
    env = clean_env(NADS_CATALOG_SHIPPED_DIR="", **extra)
    env.pop("OMP_NUM_THREADS")  # the launcher, not the caller, sets the threads
    return env


def _shards(data: Path, job_id: str) -> list[tuple[datetime | None, datetime | None, str]]:
    with sqlite3.connect(data / "nads.db") as db:
        rows = db.execute("SELECT s.started_at, s.finished_at, s.partial_sha256 FROM shards s "
                          "JOIN jobs j ON s.job_pk = j.pk WHERE j.id = ? ORDER BY s.\"index\"",
                          (job_id,)).fetchall()
    return [(_time(a), _time(b), sha) for a, b, sha in rows]


def _calibration(proc: psutil.Process) -> bool:
    try:
        return "worker.calibrate" in proc.cmdline()
    except psutil.NoSuchProcess:  # it ended while we looked
        return True


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@pytest.mark.slow
@needs_two_cores
def test_embedded_workers_run_one_single_thread_process_per_core(tmp_path: Path) -> None:
    with nads_serve(tmp_path, _env(NADS_CATALOG_AUTOBUILD="")) as serve:
        with keyed_client(serve.url, serve.key) as client:
            r = client.post("/v1/jobs/nads", json=SPEC)
            assert r.status_code == 202, r.text
            job = wait_for_job(client, r.json()["id"], timeout=240)
        log = (tmp_path / "var" / "worker.log").read_text()
        assert job["status"] == "succeeded", (job, log[-3000:])
        cores = usable_cores()
        assert "nads worker: 1 process(es) x 1 thread(s) (CPU)" in log and "-Q gpu,cpu " in log
        assert f"nads worker: {cores - 1} process(es) x 1 thread(s) (CPU)" in log
        assert "-Q gpu,cpu,catalog " in log
        workers = psutil.Process(serve.proc.pid).children()
        # a worker's throughput calibration (`python -m worker.calibrate`, run once at its
        # start) may still be running beside its pool on a loaded machine: not a pool process
        pools = [[c for c in w.children() if not _calibration(c)] for w in workers]
        # the pools, plus beat (-B) in the catalog-taking worker, and the validation lane's one
        assert "-Q validate " in log
        assert sorted(len(p) for p in pools) == sorted([1, 1, cores - 1 + 1])
        for proc in [*workers, *(p for pool in pools for p in pool)]:
            env = proc.environ()
            assert env.get("OMP_NUM_THREADS") == "1" and env.get("OMP_WAIT_POLICY") == "PASSIVE"
    shards = _shards(tmp_path / "var", job["id"])
    assert len(shards) == 2
    assert max(a for a, _, _ in shards) < min(b for _, b, _ in shards), \
        f"shards ran one after the other: {shards}"
    for _, _, sha in shards:  # each shard's partial records the threads its process used
        blob = next((tmp_path / "var" / "blobs").glob(f"*/{sha}"))
        assert PartialNADs.load(blob).meta["plan"]["threads"] == 1


@pytest.mark.slow
@needs_two_cores
def test_users_job_runs_beside_a_catalog_build_not_behind_it(tmp_path: Path) -> None:
    """The catalog's first round (4 shards of 500 LeNets, tens of seconds each on one core) is
    running when the user submits; the user's job is done before any catalog shard is (one
    worker with every process on catalog shards would make it wait for one)."""
    user_spec = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 40,
                 "seed": 5, "shards": 2}
    with nads_serve(tmp_path, _env(NADS_CATALOG_AUTOBUILD="lenet")) as serve:
        assert "catalog: building lenet" in serve.banner
        with keyed_client(serve.url, serve.key) as client:
            catalog_job = client.get("/v1/catalog/lenet").json()["job_id"]
            deadline = time.monotonic() + 120
            while not any(a for a, _, _ in _shards(tmp_path / "var", catalog_job)):
                assert time.monotonic() < deadline, "no catalog shard started"
                time.sleep(0.5)
            time.sleep(3)  # every process that takes catalog shards has taken one by now
            r = client.post("/v1/jobs/nads", json=user_spec)
            assert r.status_code == 202, r.text
            job = wait_for_job(client, r.json()["id"], timeout=120)
            assert job["status"] == "succeeded", job
        catalog = _shards(tmp_path / "var", catalog_job)
        user = _shards(tmp_path / "var", job["id"])
    assert len(catalog) == 4 and any(a is not None for a, _, _ in catalog), catalog
    first_catalog_done = min((b for _, b, _ in catalog if b is not None), default=None)
    last_user_done = max(b for _, b, _ in user)
    assert first_catalog_done is None or last_user_done < first_catalog_done, (user, catalog)
