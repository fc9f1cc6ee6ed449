"""How long an upload takes to validate while every shard slot runs a long shard: with the
validation lane (a worker of one process that takes only `validate`, as `nads serve` and
docker-compose.yml run it) and without it (`--no-lane`: the shard worker takes validations
too, as every worker did before the lane).

    python benchmarks/bench_validation_lane.py [--no-lane] [--networks 400]

A throwaway Postgres database, the file-system broker in a temporary folder, a shard worker
of two processes (`gpu,cpu`), the API in this process. One user's LeNet job (1x32x32, two
shards of `--networks`/2 networks: a minute or more each on one core of this machine) takes
both processes; once both shards run, another user uploads a small TorchScript model and the
seconds until it is `ready` are measured. Prints JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

# the repository root: this benchmark borrows the test suite's models and database helpers
# (tests/ is not an installed package)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.main import create_app  # noqa: E402
from store.migrate import upgrade  # noqa: E402
from store.settings import Settings  # noqa: E402
from tests.bad_models import scripted_bytes  # noqa: E402
from tests.fixtures import PG_ADMIN, sqlalchemy_url  # noqa: E402
from tests.hostile_models import SleepsAtJobBatches  # noqa: E402
from tests.support import ServerThread, celery_worker, new_key  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-lane", action="store_true")
    parser.add_argument("--networks", type=int, default=200)
    args = parser.parse_args()
    name = f"nads_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(Path(tmp), sqlalchemy_url(PG_ADMIN.rsplit("/", 1)[0] + "/"
                                                           + name), args)))
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(data: Path, url: str, args: argparse.Namespace) -> dict:
    settings = Settings(data_dir=data, database_url=url, broker_url=None,
                        upload_rate_per_minute=0, max_estimated_run_s=0)
    upgrade(url)
    queues = "gpu,cpu,validate" if args.no_lane else "gpu,cpu"
    lane = None if args.no_lane else celery_worker(settings, queues="validate", processes=1,
                                                   log_name="validator.log")
    with celery_worker(settings, queues=queues, processes=2), \
            (lane if lane is not None else contextlib.nullcontext()), \
            ServerThread(create_app(settings)) as server:
        a, b = (httpx.Client(base_url=server.url, timeout=30, headers={
            "Authorization": f"Bearer {new_key(settings, f'{who}-{uuid.uuid4().hex[:6]}')}"})
            for who in ("a", "b"))
        r = a.post("/v1/jobs/nads", json={"architecture": "lenet", "input_shape": [1, 32, 32],
                                          "num_networks": args.networks, "shards": 2})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        while sum(s["status"] == "running" for s in a.get(f"/v1/jobs/{job}").json()["shards"]
                  ) < 2:
            time.sleep(0.2)
        time.sleep(2)
        t0 = time.monotonic()
        r = b.post("/v1/architectures", data={"name": "plain", "input_shape": "1,16,16"},
                   files={"file": ("plain.pt", scripted_bytes(SleepsAtJobBatches()))})
        assert r.status_code == 201, r.text
        while (row := b.get(f"/v1/architectures/{r.json()['id']}").json())["status"] == \
                "validating":
            time.sleep(0.1)
        waited = time.monotonic() - t0
        shards = a.get(f"/v1/jobs/{job}").json()["shards"]
        a.post(f"/v1/jobs/{job}/cancel")
        return {"lane": not args.no_lane, "status": row["status"],
                "validated_after_s": round(waited, 1),
                "validation_seconds": (row.get("info") or {}).get("validation_seconds"),
                "shards_when_ready": [s["status"] for s in shards]}


if __name__ == "__main__":
    main()
