"""Recovery in seconds, at the default settings: a worker killed mid-shard, or `nads serve`
stopped and started mid-job, and the job resumes within 60 s and ends with the arrays
`estimate_nads` computes; no process of a killed worker survives it.

- Filesystem broker (embedded `nads serve`): the restarted worker, under its stable node name,
  takes back at once the shards its previous run left (worker/heartbeat.py `reclaim_own`).
- Redis broker, a worker that never comes back (a lost node): its shards' heartbeats stop and
  the reconciler of the surviving worker sends them again after NADS_HEARTBEAT_TIMEOUT_S.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import select

from nads.service_commands import WorkerSupervisor
from store.db import session_scope
from store.migrate import upgrade
from store.models import Job, Shard
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import (
    ServerThread,
    clean_env,
    keyed_client,
    nads_serve,
    new_key,
    settings_env,
    wait_for_job,
)

from .test_faults import (
    PrivateRedis,
    _alive,
    _text,
    _wait,
    assert_identical_to_estimate_nads,
)

pytestmark = pytest.mark.slow

# ~5 s per shard on a quiet core: long enough to kill mid-shard (a progress report a second,
# at the default NADS_PROGRESS_INTERVAL_S: several before 0.8), short enough for the suite;
# every shard killed runs again whole
SPEC = {"architecture": "lenet", "input_shape": [1, 16, 16], "num_networks": 1500,
        "shards": 2}
RESUME_S = 60.0
# One seed for the three tests: each runs its own service, and the arrays they must end with
# (estimate_nads in this process, ~10 s) are computed once.
SEED = 11


def _submit(client: httpx.Client, seed: int) -> str:
    r = client.post("/v1/jobs/nads", json={**SPEC, "seed": seed})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _running(client: httpx.Client, job_id: str) -> set[int]:
    """Waits until a shard is part way through; returns the indices of the running shards."""
    deadline = time.monotonic() + 120
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if any(s["status"] == "running" and 0 < s["fraction"] < 0.8 for s in job["shards"]):
            return {s["index"] for s in job["shards"] if s["status"] == "running"}
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def _resumed(client: httpx.Client, job_id: str, indices: set[int], since: float) -> float:
    """Seconds from `since` until every shard in `indices` runs again (a second attempt) or
    is done."""
    while True:
        try:
            job = client.get(f"/v1/jobs/{job_id}").json()
        except httpx.TransportError:
            job = None
        if job is not None:
            shards = {s["index"]: s for s in job["shards"]}
            if all(shards[i]["status"] == "succeeded" or
                   (shards[i]["status"] == "running" and shards[i]["attempts"] >= 2)
                   for i in indices):
                return time.monotonic() - since
        assert time.monotonic() - since < RESUME_S, f"not resumed within {RESUME_S} s: {job}"
        time.sleep(0.2)


def _worker_tree(serve_pid: int) -> list[psutil.Process]:
    """nads serve's workers (main processes) and every process below them."""
    mains = psutil.Process(serve_pid).children()
    return [p for m in mains for p in (m, *m.children(recursive=True))]


def _embedded_env() -> dict[str, str]:
    return clean_env(NADS_CATALOG_AUTOBUILD="", NADS_CATALOG_SHIPPED_DIR="")


def _wait_workers_ready(log: Path, count: int) -> None:
    _wait(lambda: _text(log).count("ready.") >= count, 120, "the workers did not start")


def test_embedded_worker_killed_mid_shard_resumes_within_a_minute(tmp_path: Path) -> None:
    var = tmp_path / "var"
    with nads_serve(tmp_path, _embedded_env(), "--data-dir", str(var)) as serve:
        log = var / "worker.log"
        mains = psutil.Process(serve.proc.pid).children()
        _wait_workers_ready(log, len(mains))
        with keyed_client(serve.url, serve.key) as client:
            job_id = _submit(client, seed=SEED)
            indices = _running(client, job_id)
            victims = _worker_tree(serve.proc.pid)
            killed = time.monotonic()
            for main in mains:  # the worker processes only: their children and beat are
                os.kill(main.pid, signal.SIGKILL)  # orphans unless the supervisor reaps them
            _wait(lambda: not any(_alive(p) for p in victims), 20,
                  "a process of the killed workers survived")
            took = _resumed(client, job_id, indices, killed)
            job = wait_for_job(client, job_id, timeout=300)
            assert_identical_to_estimate_nads(client, job, SEED, SPEC)
    print(f"\nrecovery (filesystem broker): workers SIGKILLed mid-shard, shards {sorted(indices)}"
          f" running again {took:.1f} s later; no orphan; arrays identical")


def test_nads_serve_stopped_and_started_mid_job_resumes_within_a_minute(tmp_path: Path
                                                                       ) -> None:
    var = tmp_path / "var"
    with nads_serve(tmp_path, _embedded_env(), "--data-dir", str(var)) as serve:
        mains = psutil.Process(serve.proc.pid).children()
        _wait_workers_ready(var / "worker.log", len(mains))
        with keyed_client(serve.url, serve.key) as client:
            job_id = _submit(client, seed=SEED)
            indices = _running(client, job_id)
        victims = _worker_tree(serve.proc.pid)
        t0 = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=60) == 0
        stopped = time.monotonic() - t0
        assert not any(_alive(p) for p in victims), "a worker process outlived nads serve"
    with nads_serve(tmp_path, _embedded_env(), "--data-dir", str(var)) as serve:
        started = time.monotonic()
        with keyed_client(serve.url, serve.key) as client:
            took = _resumed(client, job_id, indices, started)
            job = wait_for_job(client, job_id, timeout=300)
            assert_identical_to_estimate_nads(client, job, SEED, SPEC)
    print(f"\nrecovery (nads serve SIGTERM + start): stopped in {stopped:.1f} s with no "
          f"orphan; shards {sorted(indices)} running again {took:.1f} s after the start")


def test_redis_worker_lost_for_good_its_shards_move_on_within_a_minute(
        tmp_path: Path, databases: ThrowawayDatabases) -> None:
    """Two workers on Redis + Postgres; the one running a shard is killed and never comes
    back (a lost node). Its shard's heartbeat stops; the other worker's reconciler sends it
    again after the heartbeat timeout (30 s by default)."""
    redis = PrivateRedis()
    redis.start()
    url = databases.create()
    upgrade(url)
    settings = Settings(data_dir=tmp_path, database_url=url, broker_url=redis.url,
                        blob_dir=tmp_path / "blobs")
    env = settings_env(settings) | {"OMP_NUM_THREADS": "1"}
    lost = WorkerSupervisor(settings.model_copy(update={"data_dir": tmp_path / "a"}), env=env,
                            queues="gpu,cpu", beat=False)
    kept = WorkerSupervisor(settings.model_copy(update={"data_dir": tmp_path / "b"}), env=env)
    try:
        for supervisor in (lost, kept):
            supervisor.log_path.parent.mkdir(parents=True, exist_ok=True)
            supervisor.start()
        for supervisor in (lost, kept):
            _wait(lambda s=supervisor: "ready." in _text(s.log_path), 120,
                  "a worker did not start")
        key = new_key(settings, "recovery")
        with ServerThread(_app(settings)) as server, keyed_client(server.url, key) as client:
            job_id = _submit(client, seed=SEED)
            _running(client, job_id)
            victim = lost.process
            assert victim is not None
            on_lost = _shards_on(settings, job_id, _node(lost))
            if not on_lost:  # both shards went to the other worker: nothing to lose here
                pytest.fail("the lost worker ran no shard; the job's shards did not spread")
            victims = [psutil.Process(victim.pid),
                       *psutil.Process(victim.pid).children(recursive=True)]
            lost.stopping.set()  # never restarted: the node is gone
            killed = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            _wait(lambda: not any(_alive(p) for p in victims), 20,
                  "a process of the killed worker survived")
            took = _resumed(client, job_id, on_lost, killed)
            job = wait_for_job(client, job_id, timeout=300)
            assert_identical_to_estimate_nads(client, job, SEED, SPEC)
    finally:
        kept.stop()
        lost.stop()
        redis.stop()
    print(f"\nrecovery (Redis, worker lost for good): shards {sorted(on_lost)} running on the "
          f"other worker {took:.1f} s after the kill")


def _app(settings: Settings):  # noqa: ANN202
    from api.main import create_app

    return create_app(settings)


def _node(supervisor: WorkerSupervisor) -> str:
    name = supervisor.command[supervisor.command.index("-n") + 1]
    return name.replace("%h", os.uname().nodename)


def _shards_on(settings: Settings, job_id: str, node: str) -> set[int]:
    with session_scope(settings.resolved_database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        rows = session.scalars(select(Shard).where(Shard.job_pk == job.pk)).all()
        return {s.index for s in rows if s.worker == node and s.status == "running"}
