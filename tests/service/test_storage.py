"""The per-user storage quota (NADS_MAX_STORAGE_BYTES_PER_USER, api/storage.py): an upload or a
job that would pass it is refused with 507 naming the setting, the limit and the usage, before
anything is stored; deleting an upload, an architecture or a finished job frees its bytes at
once; and `nads admin gc` then removes the files nothing references. Checked at a small limit
and at the default (the usage near it is made of rows, not of gigabytes uploaded)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import numpy as np
import pytest
from sqlalchemy import select, update

from api.main import create_app
from jobs.kinds import pinned_blob_paths
from store.blobgc import collect
from store.blobs import BlobStore, record_blob
from store.db import get_sessionmaker, session_scope
from store.models import SUCCEEDED, ApiKey, Artifact, Blob, Job, Upload, utcnow
from store.settings import Settings
from tests.support import ServerThread, keyed_client, new_key, settings_env, wait_for_job

SMALL = 100_000
TINY_NAD = {"architecture": "logreg", "input_shape": [1, 8, 8], "num_networks": 8, "seed": 1}
TINY_NAD_BYTES = 8 * 64 * 4  # its estimate's result_bytes: 8 networks x 64 inputs x float32


def _server(settings: Settings, limit: int) -> Iterator[str]:
    with ServerThread(create_app(settings.model_copy(
            update={"max_storage_bytes_per_user": limit}))) as server:
        yield server.url


@pytest.fixture(scope="module")
def small_url(settings: Settings) -> Iterator[str]:
    yield from _server(settings, SMALL)


@pytest.fixture(scope="module")
def default_url(settings: Settings) -> Iterator[str]:
    yield from _server(settings, Settings().max_storage_bytes_per_user)


def _client(url: str, settings: Settings) -> tuple[httpx.Client, str]:
    key = new_key(settings, f"quota-{uuid.uuid4().hex[:8]}")
    return keyed_client(url, key), key


def _npy(floats: int, seed: int) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(seed).standard_normal((1, floats)).astype(np.float32))
    return buf.getvalue()


def _upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/v1/uploads", data={"kind": "nads"}, files={"file": ("n.npy", data)})


def _refusal(response: httpx.Response, limit: int, used: int) -> str:
    assert response.status_code == 507, response.text
    detail = response.json()["detail"]
    assert "NADS_MAX_STORAGE_BYTES_PER_USER" in detail and f"{limit:,} bytes" in detail, detail
    assert f"you use {used:,}" in detail, detail
    return detail


def _user_id(settings: Settings, key: str) -> int:
    import hashlib

    with session_scope(settings.resolved_database_url) as session:
        return session.scalar(select(ApiKey.user_id).where(
            ApiKey.key_hash == hashlib.sha256(key.encode()).hexdigest()))


def test_uploads_refused_at_the_limit_and_freed_by_delete(small_url: str,
                                                          settings: Settings) -> None:
    client, _ = _client(small_url, settings)
    with client:
        files = [_npy(10_000, seed) for seed in range(3)]  # 40,128 bytes each
        size = len(files[0])
        first, second = _upload(client, files[0]), _upload(client, files[1])
        assert first.status_code == second.status_code == 201, second.text
        detail = _refusal(_upload(client, files[2]), SMALL, 2 * size)
        assert detail.startswith("file: ")
        assert len(client.get("/v1/uploads").json()["items"]) == 2  # nothing kept of it
        # the same bytes again count again: a shared blob counts for each row that holds it
        _refusal(_upload(client, files[0]), SMALL, 2 * size)

        assert client.delete(f"/v1/uploads/{first.json()['id']}").status_code == 204
        assert _upload(client, files[2]).status_code == 201  # freed at once
        # architectures too, refused from the Content-Length before the body is read
        r = client.post("/v1/architectures", data={"name": "a", "input_shape": "1,8,8"},
                        files={"file": ("a.pt", b"PK\x03\x04" + bytes(100_000))})
        assert r.status_code == 507 and "NADS_MAX_STORAGE_BYTES_PER_USER" in r.text, r.text


def _seed(settings: Settings, user_id: int, size: int, as_job: bool) -> str:
    """Usage of `size` bytes made of rows (an upload, or a finished job's artifact) over a
    small real blob: what the quota counts is the rows' sizes."""
    blobs = BlobStore(settings.resolved_blob_dir)
    source = settings.data_dir / f"seed-{uuid.uuid4().hex}"
    source.write_bytes(uuid.uuid4().bytes)
    staged = blobs.stage(source)
    source.unlink()
    with session_scope(settings.resolved_database_url) as session:
        record_blob(session, staged.sha256, staged.size)
        blobs.put(staged)
        if as_job:
            job = Job(id=uuid.uuid4().hex, user_id=user_id, kind="nads", status=SUCCEEDED,
                      spec=TINY_NAD, estimate={"result_bytes": size})
            job.artifacts = [Artifact(name="nads.npy", sha256=staged.sha256, size=size)]
            session.add(job)
            return job.id
        row = Upload(id=uuid.uuid4().hex, user_id=user_id, kind="nads", filename="big.npy",
                     size=size, sha256=staged.sha256)
        session.add(row)
        return row.id


@pytest.mark.usefixtures("worker")  # the job submitted below runs and ends
def test_at_the_default_limit_uploads_and_jobs_refused_and_freed(default_url: str,
                                                                 settings: Settings) -> None:
    limit = Settings().max_storage_bytes_per_user
    assert limit == 10 * 2**30  # the default users get
    client, key = _client(default_url, settings)
    user_id = _user_id(settings, key)
    with client:
        room = 1_000
        upload_id = _seed(settings, user_id, limit - room, as_job=False)
        small, big = _npy(100, 1), _npy(1_000, 2)  # 528 and 4,128 bytes
        assert _upload(client, small).status_code == 201
        used = limit - room + len(small)
        _refusal(_upload(client, big), limit, used)
        job = client.post("/v1/jobs/nads", json=TINY_NAD)  # 2,048 estimated > 472 left
        assert _refusal(job, limit, used).startswith("storage: ")
        assert client.get("/v1/jobs").json()["items"] == []  # no job row was stored

        assert client.delete(f"/v1/uploads/{upload_id}").status_code == 204
        submitted = client.post("/v1/jobs/nads", json=TINY_NAD)
        assert submitted.status_code == 202, submitted.text
        # a job cannot be deleted before it ends (asked at once: the tiny job takes the worker
        # a second or more)
        r = client.delete(f"/v1/jobs/{submitted.json()['id']}")
        assert r.status_code == 409 and "cancel it" in r.json()["detail"], r.text
        assert _upload(client, big).status_code == 201

        # once it ends it counts what it stored instead (its artifacts and its shards'
        # partial results); while it runs a finished shard counts beside the reservation,
        # so the exact figure below waits for the end
        ended = wait_for_job(client, submitted.json()["id"])
        assert ended["status"] == "succeeded", ended
        job_id = _seed(settings, user_id, limit - 2 * room, as_job=True)  # a finished job
        used = limit - 2 * room + len(small) + len(big) + _stored_bytes(settings, ended["id"])
        _refusal(_upload(client, big), limit, used)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert _upload(client, big).status_code == 201


def _stored_bytes(settings: Settings, job_id: str) -> int:
    """A job's artifacts and its shards' partial results, in bytes, read from its rows."""
    with session_scope(settings.resolved_database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        partials = [shard.partial_sha256 for shard in job.shards if shard.partial_sha256]
        size = dict(session.execute(select(Blob.sha256, Blob.size)
                                    .where(Blob.sha256.in_(partials))).all())
        return sum(a.size for a in job.artifacts) + sum(size[sha] for sha in partials)


def test_admin_gc_removes_what_deleted_rows_left(api_url: str, settings: Settings) -> None:
    client, _ = _client(api_url, settings)
    blobs = BlobStore(settings.resolved_blob_dir)
    with client:
        kept = _upload(client, _npy(64, 10)).json()
        gone = _upload(client, _npy(64, 11)).json()
        with session_scope(settings.resolved_database_url) as session:  # uploaded long ago
            session.execute(update(Blob).where(Blob.sha256.in_([kept["sha256"], gone["sha256"]]))
                            .values(touched_at=utcnow() - timedelta(hours=2)))
        assert client.delete(f"/v1/uploads/{gone['id']}").status_code == 204
        # the delete touched the blob: it stays the grace period (1 h) after its last
        # reference, for whoever looked its sha256 up just before
        collect(get_sessionmaker(settings.resolved_database_url), blobs, grace_s=3600,
                pins=pinned_blob_paths())
        assert blobs.exists(gone["sha256"]) and blobs.exists(kept["sha256"])
        run = subprocess.run([sys.executable, "-m", "nads.cli", "admin", "gc", "--grace-s", "0"],
                             env=settings_env(settings), capture_output=True, text=True,
                             timeout=120, check=True)
        report = json.loads(run.stdout.strip().splitlines()[-1])
        assert report["removed"] >= 1, report
        assert not blobs.exists(gone["sha256"]) and blobs.exists(kept["sha256"])
        with session_scope(settings.resolved_database_url) as session:
            assert session.scalar(select(Upload.sha256).where(Upload.id == kept["id"]))
