"""The whole service with the API and a Celery worker that share NO directory, only Postgres,
Redis and an S3 bucket (moto's server, tests/s3_server.py): a sharded LeNet NAD job computed by
the worker and downloaded through the API (bit for bit, ETag/304, Range/206 from S3 range GETs),
a shipped catalog file, an upload stored by the API, and a probe job whose worker reads the
catalog's NADs that only the API's side put in the bucket. The S3 store alone:
tests/store/test_s3_blobs.py."""

from __future__ import annotations

import hashlib
import io
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from api.main import create_app
from store.blobs_s3 import S3BlobStore
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.s3_server import BUCKET, s3_server
from tests.support import (
    ServerThread,
    celery_worker,
    free_port,
    in_process,
    keyed_client,
    new_key,
    wait_for_job,
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


BODY = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 64, "seed": 11,
        "shards": 2}


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own: the session's worker (tests/service/conftest.py),
    which uses the directory store, must not take this test's shards from the shared broker."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True).stdout.strip() != "PONG":
            assert proc.poll() is None and time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_api_and_worker_share_only_the_bucket(s3_endpoint: str, private_redis: str,
                                              databases: ThrowawayDatabases,
                                              tmp_path: Path) -> None:
    """The API (this process) and a Celery worker (another process) with different data and
    blob directories: the worker's results reach the API through the bucket alone."""
    from jobs.shipped import install_shipped
    from store.db import session_scope
    from store.migrate import upgrade
    from store.settings import SHIPPED_CATALOG_DIR

    database_url = databases.create()
    upgrade(database_url)
    prefix = f"svc-{uuid.uuid4().hex[:8]}"
    common = {"database_url": database_url, "broker_url": private_redis,
              "blob_url": f"s3://{BUCKET}/{prefix}", "progress_interval_s": 0.2,
              "upload_rate_per_minute": 0, "catalog_autobuild": ""}
    api_settings = Settings(data_dir=tmp_path / "api", blob_dir=tmp_path / "api" / "blobs",
                            **common)
    worker_settings = Settings(data_dir=tmp_path / "gpu-node", **common)
    worker_settings.data_dir.mkdir()
    env = {"NADS_BLOB_URL": common["blob_url"], "NADS_CATALOG_AUTOBUILD": ""}
    key = new_key(api_settings, f"s3-{uuid.uuid4().hex[:6]}")
    with session_scope(database_url) as session:  # `nads catalog install`: into the bucket
        assert install_shipped(session, api_settings)["lenet"] == "installed"
    with celery_worker(worker_settings, **env), \
            ServerThread(create_app(api_settings)) as server, \
            keyed_client(server.url, key) as client:
        assert client.get("/readyz").json()["checks"]["blob_store"] == "ok"
        r = client.post("/v1/jobs/nads", json=BODY)
        assert r.status_code == 202, r.text
        job = wait_for_job(client, r.json()["id"], timeout=120)
        assert job["status"] == "succeeded", job["error"]
        assert [s["status"] for s in job["shards"]] == ["succeeded"] * 2
        meta = next(a for a in job["artifacts"] if a["name"] == "nads.npy")
        full = client.get(meta["url"])
        assert full.status_code == 200 and full.headers["etag"] == f'"{meta["sha256"]}"'
        got = np.load(io.BytesIO(full.content), allow_pickle=False)
        want = in_process(BODY)["nads"]
        assert got.dtype == want.dtype and np.array_equal(got, want)  # bit for bit

        # the same answers as from a directory (tests/service/test_jobs_e2e.py)
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["content-disposition"] == 'attachment; filename="nads.npy"'
        assert full.headers["cache-control"] == "private, max-age=31536000, immutable"
        r = client.get(meta["url"], headers={"If-None-Match": f'"{meta["sha256"]}"'})
        assert r.status_code == 304 and r.content == b""
        r = client.get(meta["url"], headers={"Range": "bytes=10-29"})
        assert r.status_code == 206 and r.content == full.content[10:30]
        assert r.headers["content-range"] == f"bytes 10-29/{meta['size']}"
        assert r.headers["content-length"] == "20"
        r = client.get(meta["url"], headers={"Range": "bytes=-16"})
        assert r.status_code == 206 and r.content == full.content[-16:]
        r = client.get(meta["url"], headers={"Range": "bytes=100-", "If-Range": '"other"'})
        assert r.status_code == 200 and r.content == full.content  # If-Range differs: all
        r = client.get(meta["url"], headers={"Range": f"bytes={meta['size'] + 5}-"})
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{meta['size']}"
        head = client.head(meta["url"])
        assert head.status_code == 200 and head.headers["content-length"] == str(meta["size"])

        # a catalog file (shipped: put in the bucket by the install above), whole and cut
        shipped = (SHIPPED_CATALOG_DIR / "lenet" / "nads.npy").read_bytes()
        r = client.get("/v1/catalog/lenet/nads.npy")
        assert r.status_code == 200 and r.content == shipped
        etag = r.headers["etag"]
        assert client.get("/v1/catalog/lenet/nads.npy",
                          headers={"If-None-Match": etag}).status_code == 304
        r = client.get("/v1/catalog/lenet/nads.npy", headers={"Range": "bytes=0-127"})
        assert r.status_code == 206 and r.content == shipped[:128]
        r = client.get("/v1/catalog/lenet/nads.npy", params={"k": 8})
        assert r.status_code == 200
        top = np.load(io.BytesIO(r.content))
        assert np.array_equal(top, np.load(io.BytesIO(shipped))[:8])

        # an upload: streamed to the API's tmp/, sent to the bucket under its sha256
        r = client.post("/v1/uploads", data={"kind": "nads"},
                        files={"file": ("mine.npy", full.content, "application/octet-stream")})
        assert r.status_code == 201, r.text
        upload = r.json()
        assert upload["sha256"] == meta["sha256"]  # the worker's blob: one object
        assert upload["arrays"]["nads"]["shape"] == list(want.shape)

        # the other way: the worker reads a blob only the API's side wrote (the catalog's
        # nads.npy, installed above) as the directions of a probe job
        probe = {"architecture": "logreg", "input_shape": [1, 32, 32],
                 "directions": {"kind": "nad", "catalog": "lenet", "indices": [0]},
                 "data": {"num_train": 64, "num_test": 64}, "training": {"epochs": 1}}
        r = client.post("/v1/jobs/probe", json=probe, params={"accept_underpowered": "true"})
        assert r.status_code == 202, r.text
        done = wait_for_job(client, r.json()["id"], timeout=120)
        assert done["status"] == "succeeded", done["error"]

    s3 = S3BlobStore(BUCKET, prefix, tmp_path / "reader")
    assert s3.verify(meta["sha256"])
    stored = {sha for sha, _, _ in s3.stored()}
    assert {a["sha256"] for a in job["artifacts"]} <= stored
    # nothing was shared through a directory: the API holds no blob the bucket does not, the
    # worker's directory is its own, and neither holds a blob outside tmp/ and cache/
    for node in ("api", "gpu-node"):
        blob_dir = tmp_path / node / "blobs"
        assert {p.name for p in blob_dir.iterdir()} <= {"tmp", "cache"}, node
    worker_cached = {p.name for p in (tmp_path / "gpu-node" / "blobs" / "cache").rglob("*")
                     if p.is_file()}
    assert meta["sha256"] in worker_cached  # written by the worker...
    catalog_sha = hashlib.sha256(shipped).hexdigest()
    assert catalog_sha in worker_cached  # fetched from the bucket by the probe's shard
    api_cached = tmp_path / "api" / "blobs" / "cache" / meta["sha256"][:2] / meta["sha256"]
    assert api_cached.is_file()  # ...and the API's upload kept its own copy
