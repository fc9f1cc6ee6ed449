"""The S3 blob store (store/blobs_s3.py) against a real S3 server process on loopback (moto's
standalone server; MinIO cannot be installed here): the directory store's properties (content
addressing, whole-or-nothing, idempotent writes, the collector's trash/restore/remove and
listings, verify, check_writable, the collector itself), then the whole service with the API
and a Celery worker that share NO directory, only Postgres, Redis and the bucket: a sharded
LeNet NAD job computed by the worker and downloaded through the API (bit for bit, ETag/304,
Range/206 from S3 range GETs), a shipped catalog file, an upload stored by the API, and a
probe job whose worker reads the catalog's NADs that only the API's side put in the bucket."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from store.blobgc import collect
from store.blobs import keep_blob, open_blob_store, record_blob
from store.blobs_s3 import S3BlobStore
from store.db import get_sessionmaker
from store.models import Blob, Upload, User
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.support import ServerThread, celery_worker, free_port, in_process, new_key, wait_for_job

BUCKET = "nads-test"
AWS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
       "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server in its own process on 127.0.0.1, the AWS variables pointing at it for
    this process (the API) and the worker's; the bucket created."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS, "AWS_ENDPOINT_URL"]}
    os.environ.update(AWS, AWS_ENDPOINT_URL=endpoint)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(endpoint, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def store(s3_endpoint: str, tmp_path: Path) -> S3BlobStore:
    """A store under a prefix of its own (the bucket is shared by the module's tests)."""
    return S3BlobStore(BUCKET, f"t-{uuid.uuid4().hex[:8]}", tmp_path / "local")


def _file(tmp: Path, data: bytes) -> Path:
    path = tmp / f"src-{uuid.uuid4().hex}"
    path.write_bytes(data)
    return path


def _object(store: S3BlobStore, sha: str) -> bytes:
    return store.client.get_object(Bucket=BUCKET, Key=store.key(sha))["Body"].read()


def test_open_blob_store_picks_the_bucket_from_the_url(s3_endpoint: str, tmp_path: Path) -> None:
    s3 = open_blob_store(Settings(data_dir=tmp_path, blob_url=f"s3://{BUCKET}/a/b/"))
    assert isinstance(s3, S3BlobStore) and (s3.bucket, s3.prefix) == (BUCKET, "a/b")
    assert s3.local_dir == (tmp_path / "blobs").resolve()
    assert not open_blob_store(Settings(data_dir=tmp_path)).remote  # unset: the directory
    with pytest.raises(ValueError, match="blob_url"):
        Settings(data_dir=tmp_path, blob_url="/srv/blobs")


def test_put_is_content_addressed_and_idempotent(store: S3BlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    sha, size = store.put_file(_file(tmp_path, data))
    assert size == len(data) and _object(store, sha) == data
    assert store.key(sha) == f"{store.prefix}/{sha[:2]}/{sha}"
    first = store.client.head_object(Bucket=BUCKET, Key=store.key(sha))["LastModified"]
    time.sleep(1.1)  # S3's Last-Modified has a resolution of one second
    assert store.put_file(_file(tmp_path, data)) == (sha, size)  # the same address
    again = store.client.head_object(Bucket=BUCKET, Key=store.key(sha))["LastModified"]
    assert again == first  # present already: not sent again
    assert [(s, n) for s, n, _ in store.stored()] == [(sha, size)]
    assert list((tmp_path / "local" / "tmp").iterdir()) == []  # no staged file left


def test_a_blob_is_whole_or_absent(store: S3BlobStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    staged = store.stage(_file(tmp_path, data))
    assert not store.exists(staged.sha256)
    assert not store.path(staged.sha256).is_file()  # readers find nothing before the put
    staged.path.unlink()  # the writer's file vanishes before the upload: nothing appears
    with pytest.raises(OSError):
        store.put(staged)
    assert not store.exists(staged.sha256) and list(store.stored()) == []
    # an object that does not hash to its key (a corrupted bucket) never reaches the cache
    bad = "ab" * 32
    store.client.put_object(Bucket=BUCKET, Key=store.key(bad), Body=b"not these bytes")
    with pytest.raises(OSError, match="does not hash"):
        store.path(bad)
    assert not store.cache_path(bad).exists()
    assert not store.verify(bad)
    # a real one: the reader's local copy is the whole blob, and a second reader with a cold
    # cache (another node) gets it from the bucket
    sha, _ = store.put_file(_file(tmp_path, data))
    assert store.verify(sha) and store.path(sha).read_bytes() == data
    other = S3BlobStore(BUCKET, store.prefix, tmp_path / "other-node")
    assert not other.cache_path(sha).exists()
    assert other.path(sha).read_bytes() == data and other.cache_path(sha).is_file()
    assert b"".join(other.read_range(sha, 10, 1010)) == data[10:1010]
    assert other.size(sha) == len(data) and other.size("cd" * 32) is None


def test_trash_restore_remove_and_listings(store: S3BlobStore, tmp_path: Path) -> None:
    shas = [store.put_file(_file(tmp_path, os.urandom(1000 + i)))[0] for i in range(3)]
    store.check_writable()  # leaves nothing that stored() would list
    assert sorted(s for s, _, _ in store.stored()) == sorted(shas)
    assert {n for _, n, _ in store.stored()} == {1000, 1001, 1002}
    assert all(abs(t - time.time()) < 120 for _, _, t in store.stored())
    a, b, _ = shas
    trashed = store.trash(a)
    assert trashed is not None and trashed.startswith(f"{store.prefix}/trash/{a}.")
    assert not store.exists(a) and not store.path(a).is_file()  # readers no longer find it
    assert sorted(s for s, _, _ in store.stored()) == sorted(shas[1:])
    [(key, sha, age)] = list(store.trashed())
    assert (key, sha) == (trashed, a) and 0 <= age < 60
    store.restore(trashed)
    assert store.exists(a) and store.verify(a) and list(store.trashed()) == []
    gone = store.trash(b)
    store.remove(gone)
    assert not store.exists(b) and list(store.trashed()) == []
    assert store.trash(b) is None  # nothing to trash
    with pytest.raises(FileNotFoundError):
        store.verify(b)


@pytest.fixture
def new_session(databases: ThrowawayDatabases) -> sessionmaker[Session]:
    from store.migrate import upgrade

    url = databases.create()
    upgrade(url)
    return get_sessionmaker(url)


def test_collector_on_the_bucket(store: S3BlobStore, tmp_path: Path,
                                 new_session: sessionmaker[Session]) -> None:
    """store/blobgc.py unchanged on the S3 store: an unreferenced blob goes (grace 0), a
    referenced one stays, a row-less object is adopted and goes, old trash is settled."""
    with new_session() as session:
        user = User(name=f"s3-{uuid.uuid4().hex[:6]}")
        session.add(user)
        session.flush()
        kept = keep_blob(session, store, store.stage(_file(tmp_path, b"kept" * 100)))
        session.add(Upload(id=uuid.uuid4().hex, user_id=user.id, kind="nads",
                           filename="x.npy", size=400, sha256=kept))
        loose = keep_blob(session, store, store.stage(_file(tmp_path, b"loose" * 100)))
        session.commit()
    orphan, _ = store.put_file(_file(tmp_path, b"orphan" * 100))  # no row (a writer died)
    stale, _ = store.put_file(_file(tmp_path, b"stale" * 100))
    with new_session() as session:
        record_blob(session, stale, 500)
        session.commit()
    # trash a collector left 10 minutes ago while its row is still there: restored
    old_key = f"{store.prefix}/trash/{stale}.{time.time_ns() - 600 * 10**9}.deadbeef"
    store.client.copy_object(Bucket=BUCKET, Key=old_key,
                             CopySource={"Bucket": BUCKET, "Key": store.key(stale)})
    store.client.delete_object(Bucket=BUCKET, Key=store.key(stale))

    report = collect(new_session, store, grace_s=3600)
    assert report.settled_trash == 1 and report.removed == 0
    assert store.exists(stale) and list(store.trashed()) == []

    report = collect(new_session, store, grace_s=0)
    assert report.orphans == 1 and report.removed == 3, report  # loose, orphan, stale
    assert [s for s, _, _ in store.stored()] == [kept] and list(store.trashed()) == []
    with new_session() as session:
        assert list(session.scalars(select(Blob.sha256))) == [kept]
    assert not any(store.exists(s) for s in (loose, orphan, stale))


BODY = {"architecture": "lenet", "input_shape": [1, 32, 32], "num_networks": 64, "seed": 11,
        "shards": 2}


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A redis-server of this test's own: the session's worker (conftest.py), which uses the
    directory store, must not take this test's shards from the shared broker."""
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
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                         timeout=30) as client:
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
