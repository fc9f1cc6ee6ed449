"""Faults with real processes: a private Redis, a private Postgres cluster, the API as a uvicorn
subprocess and a Celery worker (with beat, hence the reconciler) under `nads serve`'s
supervisor. The machine's shared Postgres and Redis are never touched.

Each test breaks one thing while jobs run (kill -9 the worker, restart Redis, stop and start
Postgres, kill the API, fill or freeze the blob directory) and checks that every job ends as it
should, with NAD arrays identical to `nadcore.nads.engine.estimate_nads` on the same spec.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import torch

from nadcore.nads.engine import estimate_nads
from nads.service_commands import WorkerSupervisor
from store.migrate import upgrade
from store.settings import Settings
from tests.support import ROOT, free_port, keyed_client, new_key, settings_env

pytestmark = pytest.mark.slow

# PostgreSQL's server binaries, wherever the system installed them (Debian: one folder per
# major version; elsewhere on PATH)
PG_BIN = next((Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                                              reverse=True)),
              Path(shutil.which("initdb") or "/usr/bin/initdb").parent)
# ~4-8 s of work per shard on this machine (the worker runs one 1-thread process per core):
# long enough to break something mid-job.
SPEC = {"architecture": "logreg", "input_shape": [1, 16, 16], "num_networks": 12000,
        "shards": 3}
ARRAYS = ("nads", "eigenvalues", "eval_point")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class PrivateRedis:
    """redis-server on a free port, no persistence: a restart loses every queued message."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait(lambda: _port_open(self.port), 10, "redis did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class PrivatePostgres:
    """A throwaway cluster in a temp dir, run as the `postgres` user (initdb refuses root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nads-faults-pg-"))
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self._as_pg([str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U",
                     "postgres", "--no-sync"])

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_pg(self, cmd: list[str]) -> None:
        _run(["runuser", "-u", "postgres", "--", *cmd], cwd=self.dir)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                     str(self.dir / "log"), "-w", "start"])

    def stop(self) -> None:
        self._as_pg([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ApiProcess:
    """`uvicorn --factory api.main:create_app` as a subprocess (killable, restartable)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app",
                 "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _wait(lambda: _port_open(self.port), 30, f"the API did not start: {self.log}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _port_open(port: int) -> bool:
    try:
        with httpx.Client(timeout=1) as c:
            c.get(f"http://127.0.0.1:{port}/healthz")
        return True
    except httpx.HTTPError:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: object, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.1)


class Stack:
    def __init__(self, redis: PrivateRedis, pg: PrivatePostgres, api: ApiProcess,
                 supervisor: WorkerSupervisor, client: httpx.Client, settings: Settings
                 ) -> None:
        self.redis, self.pg, self.api, self.supervisor = redis, pg, api, supervisor
        self.client, self.settings = client, settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not (PG_BIN / "initdb").exists() or shutil.which("redis-server") is None:
        pytest.skip("needs PostgreSQL 15 server binaries and redis-server")
    if os.geteuid() != 0:
        pytest.skip("needs root: runs a Postgres cluster as `postgres` and mounts a tmpfs")
    data = tmp_path_factory.mktemp("faults")
    redis, pg = PrivateRedis(), PrivatePostgres()
    redis.start()
    pg.start()
    api = supervisor = None
    try:
        upgrade(pg.url)
        settings = Settings(data_dir=data, database_url=pg.url, broker_url=redis.url,
                            blob_dir=data / "blobs", progress_interval_s=0.2, stale_after_s=4)
        env = settings_env(settings) | {"OMP_NUM_THREADS": "1",
                                        "NADS_RECONCILE_INTERVAL_S": "1"}
        api = ApiProcess(env, data / "api.log")
        api.start()
        supervisor = WorkerSupervisor(settings, env=env)
        supervisor.start()
        _wait(lambda: "ready." in _text(supervisor.log_path), 90, "the worker did not start")
        key = new_key(settings, "faults")
        with keyed_client(api.url, key) as client:
            yield Stack(redis, pg, api, supervisor, client, settings)
    finally:
        if supervisor is not None:
            supervisor.stop()
        if api is not None:
            api.kill()
        redis.stop()
        pg.destroy()


def _alive(proc: psutil.Process) -> bool:
    """is_running() compares creation times: a pid reused since counts as gone."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _submit(client: httpx.Client, seed: int) -> str:
    """Seeds 1 and 2 only: every job of one seed must end with the same arrays, computed once
    in this process (`_estimate_nads`); two seeds tell two concurrent jobs apart."""
    r = client.post("/v1/jobs/nads", json={**SPEC, "seed": seed})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _wait_running(client: httpx.Client, job_id: str) -> int:
    """Until a shard of the job is part way through its work; returns its index."""
    deadline = time.monotonic() + 90
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        for shard in job["shards"]:
            if shard["status"] == "running" and 0 < shard["fraction"] < 0.9:
                return shard["index"]
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def _wait_api(stack: Stack, job_id: str, timeout: float = 240) -> dict:
    """Until the job is terminal, riding over the moments the API answers 503 (database down)
    or not at all (restarting)."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        try:
            r = stack.client.get(f"/v1/jobs/{job_id}")
        except httpx.TransportError:
            r = None
        if r is not None and r.status_code == 200:
            job = r.json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
        else:
            assert r is None or r.status_code == 503, r.text
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {timeout} s: {job}")


@functools.cache
def _estimate_nads(spec_json: str, seed: int) -> dict[str, np.ndarray]:
    """estimate_nads in this process, one thread as the worker (OMP_NUM_THREADS=1); once per
    (spec, seed) in a session: tests on separate services may share their expected arrays."""
    spec = json.loads(spec_json)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return estimate_nads(spec["architecture"], tuple(spec["input_shape"]),
                             spec["num_networks"], seed=seed).arrays()
    finally:
        torch.set_num_threads(threads)


def assert_identical_to_estimate_nads(client: httpx.Client, job: dict, seed: int,
                                      spec: dict = SPEC) -> None:
    assert job["status"] == "succeeded", job["error"]
    expected = _estimate_nads(json.dumps(spec, sort_keys=True), seed)
    for name in ARRAYS:
        r = client.get(f"/v1/jobs/{job['id']}/artifacts/{name}.npy")
        assert r.status_code == 200, r.text
        got = np.load(io.BytesIO(r.content))
        np.testing.assert_array_equal(got, expected[name])


def test_a_worker_killed_mid_job_is_restarted_and_the_job_matches(stack: Stack) -> None:
    """kill -9 the worker's whole process group (main process and the pool child computing a
    shard): the supervisor starts a new worker, whose reconciler sends the lost shard again."""
    job_id = _submit(stack.client, seed=1)
    index = _wait_running(stack.client, job_id)
    victim = stack.supervisor.process
    assert victim is not None and victim.poll() is None
    main = psutil.Process(victim.pid)
    procs = [main, *main.children(recursive=True)]
    os.killpg(victim.pid, signal.SIGKILL)
    _wait(lambda: stack.supervisor.restarts >= 1, 30, "the supervisor did not restart")
    # A killed process with a large heap takes a moment to exit on a loaded machine.
    _wait(lambda: not any(_alive(p) for p in procs), 20, "killed worker processes remain")
    job = _wait_api(stack, job_id)
    assert_identical_to_estimate_nads(stack.client, job, seed=1)
    assert job["shards"][index]["attempts"] >= 2  # the killed shard ran again
    assert stack.supervisor.process is not victim
    print(f"\nfault survived: worker group SIGKILLed mid-job, restarted "
          f"{stack.supervisor.restarts}x; job succeeded, shard attempts "
          f"{[s['attempts'] for s in job['shards']]}, arrays identical to estimate_nads")


def test_redis_restarted_mid_job(stack: Stack) -> None:
    """Redis (no persistence) restarted while shards run and wait: every queued message is
    gone; the worker reconnects and the reconciler sends the lost work again."""
    job_id = _submit(stack.client, seed=2)
    _wait_running(stack.client, job_id)
    stack.redis.stop()
    time.sleep(2)
    stack.redis.start()
    job = _wait_api(stack, job_id)
    assert_identical_to_estimate_nads(stack.client, job, seed=2)
    print(f"\nfault survived: Redis restarted mid-job (queue lost); job succeeded, shard "
          f"attempts {[s['attempts'] for s in job['shards']]}, arrays identical")


def test_postgres_stopped_and_started_while_jobs_run(stack: Stack) -> None:
    """/readyz says 503 while the database is down (other routes 503 too, not 500), and every
    job ends correctly once it is back."""
    ids = {seed: _submit(stack.client, seed=seed) for seed in (1, 2)}
    _wait_running(stack.client, ids[1])
    stack.pg.stop()
    stopped = time.monotonic()
    try:
        ready = httpx.get(stack.api.url + "/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["database"].startswith("error")
        read = stack.client.get(f"/v1/jobs/{ids[1]}")
        assert read.status_code == 503 and "database unavailable" in read.json()["detail"]
        assert read.headers["retry-after"]
        time.sleep(3)
    finally:
        stack.pg.start()
        down = time.monotonic() - stopped
    _wait(lambda: httpx.get(stack.api.url + "/readyz", timeout=30).status_code == 200, 30,
          "/readyz did not come back")
    for seed, job_id in ids.items():
        assert_identical_to_estimate_nads(stack.client, _wait_api(stack, job_id), seed=seed)
    print(f"\nfault survived: Postgres down {down:.1f} s while 2 jobs ran; /readyz 503 and "
          f"reads 503 meanwhile; both jobs succeeded, arrays identical")


def test_api_killed_and_restarted_loses_no_job(stack: Stack) -> None:
    ids = {seed: _submit(stack.client, seed=seed) for seed in (1, 2)}
    stack.api.kill()
    with pytest.raises(httpx.TransportError):
        stack.client.get(f"/v1/jobs/{ids[1]}")
    stack.api.start()  # same port, fresh process
    for seed, job_id in ids.items():
        assert_identical_to_estimate_nads(stack.client, _wait_api(stack, job_id), seed=seed)
    print("\nfault survived: API SIGKILLed right after 2 submissions and restarted; both "
          "jobs succeeded, arrays identical")


@pytest.fixture
def small_blob_dir(stack: Stack) -> Iterator[Path]:
    """A 256 KiB tmpfs mounted over the blob directory (a shard's partial is ~2 MB)."""
    root = stack.settings.resolved_blob_dir
    root.mkdir(parents=True, exist_ok=True)
    try:
        _run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(root)])
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield root
    finally:
        _run(["umount", "-l", str(root)])


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_full_or_read_only_blob_dir_fails_the_job_cleanly(stack: Stack, small_blob_dir: Path,
                                                            fault: str) -> None:
    if fault == "read-only":
        _run(["mount", "-o", "remount,ro", str(small_blob_dir)])
    job_id = _submit(stack.client, seed=1)
    job = _wait_api(stack, job_id)
    assert job["status"] == "failed"
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    assert "blob store" in job["error"] and reason in job["error"], job["error"]
    assert job["artifacts"] == []
    # Once the job's shards have stopped (the failed job's other shard may still be writing
    # when the first one's failure fails the job; each removes its own staged file before its
    # row leaves running): no partial blob, not even a temporary file.
    deadline = time.monotonic() + 120
    while any(s["status"] == "running" for s in job["shards"]):
        assert time.monotonic() < deadline, job["shards"]
        time.sleep(0.2)
        job = stack.client.get(f"/v1/jobs/{job_id}").json()
    assert _files(small_blob_dir) == []
    # The service keeps serving: reads, listings, and a new submission.
    assert stack.client.get("/healthz").status_code == 200
    assert stack.client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert stack.client.get("/v1/jobs").status_code == 200
    # An upload cannot land either: 507 (full) or 503 (read-only) naming the reason, no 500.
    buf = io.BytesIO()
    np.save(buf, np.zeros((100, 1024), np.float32))  # 400 kB > the 256 KiB tmpfs
    up = stack.client.post("/v1/uploads", data={"kind": "nads"},
                           files={"file": ("n.npy", buf.getvalue())})
    assert up.status_code == (507 if fault == "full" else 503), up.text
    assert reason in up.json()["detail"]
    assert _files(small_blob_dir) == []
    ready = httpx.get(stack.api.url + "/readyz", timeout=30)
    if fault == "read-only":
        assert ready.status_code == 503 and ready.json()["checks"]["blob_store"].startswith(
            "error")
    assert stack.supervisor.process is not None and stack.supervisor.process.poll() is None
    print(f"\nfault handled: blob dir {fault}: job failed with {job['error']!r}; upload "
          f"{up.status_code}; no file left; API and worker still up")
