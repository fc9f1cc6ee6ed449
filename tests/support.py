"""Helpers shared by the API, store and service tests (fixtures live in tests/fixtures.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from sqlalchemy import delete, select

from jobs.broker import make_celery
from nadcore import run_spec
from nadcore.nads.spec import NADSpec
from nadcore.networks.factory import model_factory
from nadcore.networks.init import NetworkSampler
from nadcore.seeding import eval_point_seed
from nads.service_commands import stop_process
from store.auth import create_key
from store.db import session_scope
from store.models import Artifact, Job, utcnow
from store.settings import Settings
from worker.reconcile import reconcile_once

ROOT = Path(__file__).resolve().parents[1]
# The operator's /metrics token of the suite's APIs (NADS_METRICS_TOKEN) and its header.
METRICS_TOKEN = "suite-metrics-token"
METRICS_AUTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}
NADS_BIN = str(Path(sys.executable).with_name("nads"))


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any NADS_* variable, one BLAS thread (as `reference`
    computes), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    return env | {"OMP_NUM_THREADS": "1"} | extra


@dataclass
class Serve:
    """A running `nads serve`: its process, URL, printed key and start-up banner."""

    proc: subprocess.Popen
    url: str
    key: str
    banner: str


@contextlib.contextmanager
def nads_serve(cwd: Path, env: dict[str, str], *args: str, timeout: float = 90
               ) -> Iterator[Serve]:
    """Starts `nads serve` as a user does, waits for its key, and stops it with SIGTERM at the
    end (SIGKILL after 30 s: then `proc.returncode` is negative, which tests can assert on)."""
    port = free_port()
    proc = subprocess.Popen([NADS_BIN, "serve", "--port", str(port), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while not any(line.startswith("local API key:") for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            lines.append(line)
            assert time.monotonic() < deadline, "".join(lines)
        yield Serve(proc, f"http://127.0.0.1:{port}", lines[-1].split()[-1], "".join(lines))
    finally:
        stop_process(proc, 30)


def wait_for_log(path: Path, needle: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    text = path.read_text(errors="replace") if path.exists() else ""
    raise RuntimeError(f"{needle!r} not seen in {path} (exit {proc.poll()}):\n{text[-3000:]}")


@contextlib.contextmanager
def celery_worker(settings: Settings, queues: str = "gpu,cpu,catalog,validate",
                  processes: int | None = None, log_name: str = "worker.log",
                  **extra_env: str) -> Iterator[subprocess.Popen]:
    """A real Celery worker for `settings` in the default layout (worker/layout.py: prefork,
    one 1-thread child per usable core, as `nads serve` runs it; or `processes`), its log in
    the data dir; stopped with SIGTERM (SIGKILL after 20 s). By default the children take the
    suite's queued validations and shards side by side (a deployment runs validations on a
    lane of their own: tests/service/test_budgets.py)."""
    from nadcore.cores import usable_cores
    from worker.layout import plan_layout

    layout = plan_layout(usable_cores(), processes=processes or 0)
    log_path = settings.data_dir / log_name
    cmd = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", queues,
           "--pool", "prefork", "--concurrency", str(layout.processes), "--loglevel", "INFO",
           "-n", f"test-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle"]
    # One BLAS/OpenMP thread per child: on this 2-core machine, OpenMP spinning under
    # contention makes tasks 10x slower at random. The e2e tests compute their reference
    # single-threaded too.
    env = settings_env(settings) | layout.env() | {"OMP_NUM_THREADS": "1"} | extra_env
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        wait_for_log(log_path, "ready.", proc, timeout=90)
        yield proc
    finally:
        stop_process(proc, 20)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    env.update(
        NADS_DATA_DIR=str(settings.data_dir),
        NADS_DATABASE_URL=settings.resolved_database_url,
        NADS_BROKER_URL=settings.resolved_broker_url,
        NADS_BLOB_DIR=str(settings.resolved_blob_dir),
        NADS_PROGRESS_INTERVAL_S=str(settings.progress_interval_s),
        NADS_STALE_AFTER_S=str(settings.stale_after_s),
        NADS_ARCHITECTURE_VALIDATION_TIMEOUT_S=str(settings.architecture_validation_timeout_s),
    )
    return env


class ServerThread:
    """uvicorn serving an app over real HTTP on a free port, in a thread of the test process."""

    def __init__(self, app: FastAPI, protocol: type | None = None) -> None:
        """`protocol`: uvicorn's HTTP protocol class (api.serving's `limited_protocol`, as
        `nads serve` and the images serve); default uvicorn's own."""
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        if protocol is not None:
            config.http = protocol
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def new_key(settings: Settings, user: str) -> str:
    with session_scope(settings.resolved_database_url) as session:
        return create_key(session, user)


def submit_at_once(urls: list[str], key: str, body: dict, timeout: float) -> list[int]:
    """POSTs `body` (with seed i) to /v1/jobs/nads of urls[i], all threads released at once
    by a barrier, with `key`; the status codes, in the order they came."""
    codes: list[int] = []
    barrier = threading.Barrier(len(urls))

    def submit(url: str, seed: int) -> None:
        barrier.wait()
        r = httpx.post(url + "/v1/jobs/nads", json={**body, "seed": seed},
                       headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
        codes.append(r.status_code)

    threads = [threading.Thread(target=submit, args=(u, i)) for i, u in enumerate(urls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


def lose_shard(settings: Settings, job_id: str, index: int, fraction: float) -> str | None:
    """Rewinds a finished job to "shard `index` was running (at `fraction`) when its worker
    died": its heartbeat an hour old, its partial result and the job's artifacts gone; then
    runs the reconciler once, which must send work again. The shard's partial sha256 before."""
    with session_scope(settings.resolved_database_url) as session:
        row = session.scalar(select(Job).where(Job.id == job_id))
        shard = row.shards[index]
        before = shard.partial_sha256
        shard.status, shard.partial_sha256, shard.fraction = "running", None, fraction
        shard.updated_at = shard.heartbeat_at = utcnow() - timedelta(hours=1)  # beat stopped
        row.status, row.merge_status, row.summary, row.finished_at = "running", None, None, None
        session.execute(delete(Artifact).where(Artifact.job_pk == row.pk))
    with session_scope(settings.resolved_database_url) as session:
        assert reconcile_once(session, make_celery(settings), settings) >= 1
    return before


def keyed_client(base_url: str, key: str, timeout: float = 30) -> httpx.Client:
    """A client of the API at `base_url` that sends `key` as its bearer token."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                        timeout=timeout)


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120,
                 until: tuple[str, ...] = ("succeeded", "failed", "cancelled")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.2)


def in_process(body: dict) -> dict[str, np.ndarray]:
    """run_spec in this process, with one thread like the test worker (the eigendecomposition's
    last bit depends on the thread count; the partial sums do not). For bit-for-bit checks
    that the service returns what the library computes; `reference` is the independent one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_spec(NADSpec.model_validate(body)).arrays()
    finally:
        torch.set_num_threads(threads)


_REFERENCES: dict[str, dict[str, np.ndarray]] = {}


def reference(body: dict) -> dict[str, np.ndarray]:
    """`paper_reference`, computed once per spec in a test session."""
    key = json.dumps(body, sort_keys=True)
    if key not in _REFERENCES:
        _REFERENCES[key] = paper_reference(body)
    return _REFERENCES[key]


def paper_reference(body: dict) -> dict[str, np.ndarray]:
    """The spec's NADs computed the paper's way, without nadcore's engine: each network j
    loaded into a plain module, its gradient taken one network at a time (all 2*D perturbed
    inputs of central finite differences in one batch, or one autograd backward pass;
    tests/helpers.py), then the exact eigendecomposition of the centered covariance in float64
    numpy. Shared with the engine are only the spec's definitions: which networks (the init
    plan drawn from (seed, j), nadcore.networks.init) and x0 (N(0, I) from the seed). Not shared:
    the batched/vmapped evaluator, chunking, partial sums and their merge, the decomposition, the
    sign rule's code. Built-in architectures only; D <= 4096 (no low-rank specs)."""
    from tests.helpers import autograd_gradient, naive_finite_differences

    spec = NADSpec.model_validate(body)
    assert isinstance(spec.architecture, str) and not spec.uses_lowrank, spec.architecture
    shape, outputs = tuple(spec.input_shape), spec.output_index + 1
    factory = model_factory(spec.architecture)
    template = factory(shape, outputs)
    mode = "builder" if spec.architecture.startswith("torchvision:") else "plan"
    sampler = NetworkSampler(lambda: factory(shape, outputs).eval(), template, spec.seed,
                             torch.device("cpu"), mode)
    if spec.eval_point is not None:
        x0 = torch.tensor(spec.eval_point, dtype=torch.float32).reshape(shape)
    else:
        x0 = torch.randn(shape, generator=torch.Generator().manual_seed(
            eval_point_seed(spec.seed)))
    state, model = sampler.sample(range(spec.num_networks)), factory(shape, outputs).eval()
    grads = []
    for j in range(spec.num_networks):
        model.load_state_dict({name: value[j] for name, value in state.items()})
        if spec.method == "finite_difference":
            grads.append(naive_finite_differences(model, x0, spec.scale, range(spec.input_dim),
                                                  spec.output_index))
        else:
            grads.append(autograd_gradient(model, x0, spec.output_index))
    g = np.stack(grads).astype(np.float64)
    g -= g.mean(axis=0)
    values, vectors = np.linalg.eigh(g.T @ g / (len(g) - 1))
    k = min(spec.num_nads, spec.num_networks - 1, spec.input_dim)
    values, vectors = np.clip(values[::-1][:k], 0, None), vectors[:, ::-1][:, :k].T
    rows = np.arange(k)
    vectors *= np.where(vectors[rows, np.abs(vectors).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
    return {"nads": vectors.astype(np.float32), "eigenvalues": values,
            "eval_point": x0.numpy()}


def assert_matches_reference(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                             rtol: float = 1e-4) -> None:
    """The service's arrays against `reference`: same x0, eigenvalues to `rtol` (float32
    gradients summed in another order), and every NAD whose eigenvalue is separated from its
    neighbours by more than 100 x rtol (relative) the same vector, sign included (a perturbation
    of relative size e moves it by about e / gap); the NADs of closer eigenvalues, through the
    subspace they span together (all k: the same span)."""
    np.testing.assert_array_equal(got["eval_point"], want["eval_point"])
    assert got["nads"].shape == want["nads"].shape, (got["nads"].shape, want["nads"].shape)
    values = want["eigenvalues"]
    np.testing.assert_allclose(got["eigenvalues"], values, rtol=rtol, atol=rtol * values[0])
    gaps = np.abs(np.diff(values)) / values[0]
    k = len(values)
    separated = [i for i in range(k) if (i == 0 or gaps[i - 1] > 100 * rtol)
                 and (i == k - 1 or gaps[i] > 100 * rtol)]
    dots = np.einsum("ij,ij->i", got["nads"].astype(np.float64), want["nads"])
    off = {i: float(dots[i]) for i in separated if dots[i] <= 1 - 1e-3}
    assert not off, off
    overlap = float(np.sum((got["nads"].astype(np.float64) @ want["nads"].T) ** 2) / k)
    assert overlap > 1 - 1e-3, overlap


def cancel_once_running(client: httpx.Client, job_id: str) -> tuple[dict, dict]:
    """Waits until a shard reports progress, cancels, waits until no shard runs.
    Returns (the job as it was when cancelled, the job at the end)."""
    deadline = time.monotonic() + 60
    while True:
        current = client.get(f"/v1/jobs/{job_id}").json()
        if any(s["fraction"] > 0 for s in current["shards"]):
            break
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    final = wait_for_job(client, job_id, until=("cancelled",))
    t0 = time.monotonic()
    while any(s["status"] == "running" for s in final["shards"]):
        assert time.monotonic() - t0 < 60, "the running shard did not stop"
        time.sleep(0.2)
        final = client.get(f"/v1/jobs/{job_id}").json()
    return current, final


def submit_job(client: httpx.Client, body: dict | str, path: str) -> dict:
    """POSTs a job spec (a dict, or JSON text as written in an issue) to `path`; asserts 202
    and the Location header, returns the job."""
    if isinstance(body, str):
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def refused_messages(client: httpx.Client, body: dict, path: str) -> list[str]:
    """POSTs a spec that must be refused; returns the messages of the 422."""
    r = client.post(path, json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    return [detail["msg"]] if isinstance(detail, dict) else [d["msg"] for d in detail]


def failing_poison(client: httpx.Client) -> dict:
    """The body of a job the API admits and the worker fails: a poison job on digits whose
    uploaded NAD array (the caller's `.npy`, checked by the API by its header only) has rows of
    4 values, not the 1,024 of a 32x32 image, which the worker finds when it reads them."""
    buf = io.BytesIO()
    np.save(buf, np.eye(4, dtype=np.float32))
    r = client.post("/v1/uploads", data={"kind": "nads"},
                    files={"file": ("rows-of-4.npy", buf.getvalue(), "application/octet-stream")})
    assert r.status_code in (200, 201), r.text
    return {"architecture": "lenet", "nads": {"upload": r.json()["id"]}, "indices": [0],
            "dataset": {"name": "digits", "limit_train": 100, "limit_test": 50},
            "training": {"epochs": 1}}
