"""The S3 blob store (store/blobs_s3.py) against a real S3 server process on loopback (moto's
standalone server, tests/s3_server.py): the directory store's properties (content addressing,
whole-or-nothing, idempotent writes, the collector's trash/restore/remove and listings, verify,
check_writable, the collector itself). The whole service on a bucket:
tests/service/test_s3_e2e.py."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from jobs.kinds import pinned_blob_paths
from store.blobgc import collect
from store.blobs import keep_blob, open_blob_store, record_blob
from store.blobs_s3 import S3BlobStore
from store.db import get_sessionmaker
from store.models import Blob, Upload, User
from store.settings import Settings
from tests.fixtures import ThrowawayDatabases
from tests.s3_server import BUCKET, s3_server


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


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

    report = collect(new_session, store, grace_s=3600, pins=pinned_blob_paths())
    assert report.settled_trash == 1 and report.removed == 0
    assert store.exists(stale) and list(store.trashed()) == []

    report = collect(new_session, store, grace_s=0, pins=pinned_blob_paths())
    assert report.orphans == 1 and report.removed == 3, report  # loose, orphan, stale
    assert [s for s, _, _ in store.stored()] == [kept] and list(store.trashed()) == []
    with new_session() as session:
        assert list(session.scalars(select(Blob.sha256))) == [kept]
    assert not any(store.exists(s) for s in (loose, orphan, stale))
