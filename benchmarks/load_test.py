"""Bounded load test on loopback: N concurrent clients, each polling a job's status and
downloading its 4 MB `.npy` artifact in a loop, for a fixed duration.

    python benchmarks/load_test.py --clients 100 --duration 60

Self-contained: a throwaway Postgres database (on `--pg`, dropped at the end, or the database
of `--database-url`), the API served by `uvicorn` in a subprocess (`--api-workers` processes)
and a finished NAD job of a fresh user whose `nads.npy` artifact (`--artifact-mb` MiB of
float32) is put in the blob store and recorded through the store layer, as the worker does.
uvicorn runs as Dockerfile.api and `nads serve` run it (keep-alive 75 s: with uvicorn's 5 s
default a client's next request raced the server closing the idle connection). The generator
(asyncio + httpx, one connection per client) runs in this process. Reports
p50/p99 latency per request kind, throughput and errors (any status other than 200, a wrong
body length, a transport error); `--json` writes them to a file. Exit status 1 on any error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg
from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nads.service_commands import stop_process  # noqa: E402
from store.auth import create_key  # noqa: E402
from store.blobs import BlobStore, record_blob  # noqa: E402
from store.db import session_scope  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.models import NADS, SUCCEEDED, Artifact, Job, Shard, User, utcnow  # noqa: E402


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"status": [],
                                                                       "download": []})
    errors: list[str] = field(default_factory=list)
    bytes: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_job(database_url: str, blob_dir: Path, megabytes: float) -> tuple[str, str, int]:
    """A user, its key, and a succeeded NAD job with a `nads.npy` of `megabytes` MiB."""
    rows = max(1, int(megabytes * 2**20 / (1024 * 4)))
    array = np.random.default_rng(0).standard_normal((rows, 1024)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "nads.npy"
        np.save(path, array)
        sha, size = BlobStore(blob_dir).put_file(path)
    now = utcnow()
    with session_scope(database_url) as session:
        name = f"load-{uuid.uuid4().hex[:8]}"
        key = create_key(session, name)
        user_id = session.scalar(select(User.id).where(User.name == name))
        record_blob(session, sha, size)
        job = Job(id=uuid.uuid4().hex, user_id=user_id, kind=NADS, status=SUCCEEDED,
                  spec={"architecture": "logreg", "input_shape": [1, 32, 32],
                        "num_networks": rows + 1},
                  summary={"note": "seeded by benchmarks/load_test.py"}, merge_status=SUCCEEDED,
                  created_at=now, started_at=now, finished_at=now, updated_at=now)
        job.shards = [Shard(index=0, start=0, stop=rows + 1, status=SUCCEEDED, fraction=1.0,
                            attempts=1, updated_at=now)]
        job.artifacts = [Artifact(name="nads.npy", sha256=sha, size=size)]
        session.add(job)
        session.flush()
        return key, job.id, size


class Api:
    """uvicorn serving `api.main:create_app` in a subprocess."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--host",
               "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
               "--log-level", "warning", "--no-access-log", "--timeout-keep-alive", "75"]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.proc, 20)


async def client_loop(url: str, key: str, job_id: str, size: int, stop_at: float,
                      stats: Stats) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=60) as client:
        while time.monotonic() < stop_at:
            for kind, path in (("status", f"/v1/jobs/{job_id}"),
                               ("download", f"/v1/jobs/{job_id}/artifacts/nads.npy")):
                t0 = time.perf_counter()
                try:
                    r = await client.get(path)
                    body = r.content
                except httpx.HTTPError as exc:
                    stats.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                stats.latencies[kind].append(time.perf_counter() - t0)
                stats.bytes += len(body)
                if r.status_code != 200:
                    stats.errors.append(f"{kind}: HTTP {r.status_code}: {r.text[:200]}")
                elif kind == "download" and len(body) != size:
                    stats.errors.append(f"download: {len(body)} bytes, expected {size}")
                elif kind == "status" and r.json()["status"] != SUCCEEDED:
                    stats.errors.append(f"status: {r.json()['status']}")


async def run_load(url: str, key: str, job_id: str, size: int, clients: int,
                   duration: float) -> tuple[Stats, float]:
    stats = Stats()
    start = time.monotonic()
    await asyncio.gather(*(client_loop(url, key, job_id, size, start + duration, stats)
                           for _ in range(clients)))
    return stats, time.monotonic() - start


def summarize(stats: Stats, elapsed: float, clients: int, size: int) -> dict:
    out: dict = {"clients": clients, "seconds": round(elapsed, 2),
                 "artifact_bytes": size, "errors": len(stats.errors),
                 "error_samples": stats.errors[:5]}
    total = 0
    for kind, values in stats.latencies.items():
        ms = np.array(values) * 1000
        total += len(values)
        out[kind] = {"requests": len(values),
                     "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
                     "p99_ms": round(float(np.percentile(ms, 99)), 1) if len(ms) else None,
                     "per_s": round(len(values) / elapsed, 1)}
    out["requests"] = total
    out["requests_per_s"] = round(total / elapsed, 1)
    out["mib_per_s"] = round(stats.bytes / elapsed / 2**20, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--artifact-mb", type=float, default=4.0)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--pg", default=os.environ.get("NADS_TEST_PG",
                                                      "postgresql://postgres@127.0.0.1:5432/test"),
                        help="admin URL of the Postgres server the throwaway database goes on")
    parser.add_argument("--database-url", default=None,
                        help="use this (SQLAlchemy) database instead of a throwaway one")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)

    dropped = None
    if args.database_url:
        database_url = args.database_url
    else:
        dropped = f"nads_load_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dropped}"')
        database_url = (args.pg.rsplit("/", 1)[0] + "/" + dropped).replace(
            "postgresql://", "postgresql+psycopg://", 1)
    api = None
    try:
        with tempfile.TemporaryDirectory(prefix="nads-load-") as tmp:
            data = Path(tmp)
            upgrade(database_url)
            key, job_id, size = seed_job(database_url, data / "blobs", args.artifact_mb)
            env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
            env.update(NADS_DATA_DIR=str(data), NADS_DATABASE_URL=database_url,
                       NADS_BROKER_URL="memory://", NADS_BLOB_DIR=str(data / "blobs"))
            api = Api(env, args.api_workers, data / "api.log")
            stats, elapsed = asyncio.run(run_load(api.url, key, job_id, size, args.clients,
                                                  args.duration))
            figures = summarize(stats, elapsed, args.clients, size)
            if figures["errors"]:
                print((data / "api.log").read_text()[-3000:], file=sys.stderr)
    finally:
        if api is not None:
            api.stop()
        if dropped:
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dropped}" WITH (FORCE)')
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
