"""The blob collector (store/blobgc.py) on the real Postgres and on SQLite: an unreferenced blob
goes after the grace period and not before, a referenced one stays (rows, the blobs a
running job's spec pins, the catalog), row-less files and abandoned trash are settled, and writers
hammering the same contents while the collector runs with no grace period at all never lose a
blob they reference."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from jobs.kinds import pinned_blob_paths
from store.blobgc import collect
from store.blobs import BlobStore, keep_blob
from store.db import get_sessionmaker
from store.migrate import upgrade
from store.models import (
    QUEUED,
    SUCCEEDED,
    Blob,
    CatalogEntry,
    Job,
    Upload,
    User,
    utcnow,
)
from tests.fixtures import ThrowawayDatabases

HOUR = 3600.0


@pytest.fixture(params=["postgres", "sqlite"])
def new_session(request: pytest.FixtureRequest, databases: ThrowawayDatabases,
                tmp_path: Path) -> sessionmaker[Session]:
    sqlite_url = f"sqlite:///{tmp_path / 'gc.db'}"
    url = databases.create() if request.param == "postgres" else sqlite_url
    upgrade(url)
    return get_sessionmaker(url)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobStore:
    return BlobStore(tmp_path / "blobs")


@pytest.fixture
def user_id(new_session: sessionmaker[Session]) -> int:
    with new_session() as session:
        user = User(name=f"gc-{uuid.uuid4().hex[:8]}")
        session.add(user)
        session.commit()
        return user.id


def _store(new_session: sessionmaker[Session], blobs: BlobStore, tmp: Path, data: bytes,
           user_id: int | None = None, age_s: float = 0.0) -> tuple[str, str | None]:
    """Keeps `data` as a blob (the writers' protocol), referenced by an upload of `user_id`
    when given; `age_s` back-dates its touched_at. Returns (sha256, upload id)."""
    source = tmp / f"src-{uuid.uuid4().hex}"
    source.write_bytes(data)
    staged = blobs.stage(source)
    source.unlink()
    upload_id = None
    with new_session() as session:
        sha = keep_blob(session, blobs, staged)
        if user_id is not None:
            upload_id = uuid.uuid4().hex
            session.add(Upload(id=upload_id, user_id=user_id, kind="nads", filename="x.npy",
                               size=len(data), sha256=sha))
        session.commit()
        if age_s:
            session.execute(update(Blob).where(Blob.sha256 == sha)
                            .values(touched_at=utcnow() - timedelta(seconds=age_s)))
            session.commit()
    return sha, upload_id


def _has_row(new_session: sessionmaker[Session], sha: str) -> bool:
    with new_session() as session:
        return session.get(Blob, sha) is not None


def test_unreferenced_blob_goes_after_the_grace_period_referenced_stays(
        new_session: sessionmaker[Session], blobs: BlobStore, user_id: int, tmp_path: Path
) -> None:
    referenced, upload_id = _store(new_session, blobs, tmp_path, b"kept", user_id, 2 * HOUR)
    old, _ = _store(new_session, blobs, tmp_path, b"old garbage", age_s=2 * HOUR)
    recent, _ = _store(new_session, blobs, tmp_path, b"recent garbage", age_s=60)

    report = collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths())
    assert (report.removed, report.removed_bytes) == (1, len(b"old garbage"))
    assert not blobs.exists(old) and not _has_row(new_session, old)
    assert blobs.exists(referenced) and blobs.exists(recent) and _has_row(new_session, recent)

    with new_session() as session:  # the user deletes the upload: nothing references it now
        session.execute(delete(Upload).where(Upload.id == upload_id))
        session.commit()
    assert collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths()).removed == 1
    assert not blobs.exists(referenced) and not _has_row(new_session, referenced)
    assert blobs.exists(recent)  # still within its grace period
    assert not list(blobs.trashed())


def test_running_jobs_pinned_blobs_and_the_catalog_are_references(
        new_session: sessionmaker[Session], blobs: BlobStore, user_id: int, tmp_path: Path
) -> None:
    """A queued job reads the blobs its spec pinned at admission (an uploaded architecture's
    archive, a probe's or a poison job's NADs) whatever becomes of their source: they stay
    while it is queued or running, and go once it is finished and nothing else names them."""
    archive, _ = _store(new_session, blobs, tmp_path, b"an archive", age_s=2 * HOUR)
    probed, _ = _store(new_session, blobs, tmp_path, b"a probe's nads.npy", age_s=2 * HOUR)
    poisoned, _ = _store(new_session, blobs, tmp_path, b"a poison's nads.npy", age_s=2 * HOUR)
    shipped, _ = _store(new_session, blobs, tmp_path, b"a shipped file", age_s=2 * HOUR)
    specs = [("nads", {"architecture": {"id": "a1", "sha256": archive, "init": "keep"}}),
             ("probe", {"architecture": "lenet",
                        "directions": {"kind": "nad", "job": "n1", "sha256": probed}}),
             ("poison", {"architecture": "lenet", "nads": {"catalog": "lenet",
                                                          "sha256": poisoned}})]
    with new_session() as session:
        jobs = [Job(id=uuid.uuid4().hex, user_id=user_id, kind=kind, status=QUEUED, spec=spec)
                for kind, spec in specs]
        session.add_all(jobs)
        session.add(CatalogEntry(name=f"c{uuid.uuid4().hex[:6]}", spec={}, target_stability=0.9,
                                 stability_k=4, round_networks=2, shard_networks=1,
                                 origin="shipped", files={"eigenvalues.npy": shipped}))
        session.commit()
        job_pks = [job.pk for job in jobs]
    assert collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths()).removed == 0
    assert all(blobs.exists(sha) for sha in (archive, probed, poisoned, shipped))

    with new_session() as session:  # finished jobs no longer need what they pinned
        session.execute(update(Job).where(Job.pk.in_(job_pks)).values(status=SUCCEEDED))
        session.commit()
    report = collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths())
    assert report.removed == 3 and not any(blobs.exists(sha) for sha in (archive, probed,
                                                                           poisoned))
    assert blobs.exists(shipped)


def test_rowless_files_and_abandoned_trash(new_session: sessionmaker[Session], blobs: BlobStore,
                                           tmp_path: Path) -> None:
    old_orphan, new_orphan = tmp_path / "a", tmp_path / "b"
    old_orphan.write_bytes(b"a writer died before its commit")
    new_orphan.write_bytes(b"a writer is about to commit")
    old_sha = blobs.put(blobs.stage(old_orphan)).name
    new_sha = blobs.put(blobs.stage(new_orphan)).name
    past = time.time() - 2 * HOUR
    os.utime(blobs.path(old_sha), (past, past))
    report = collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths())
    assert (report.orphans, report.removed) == (1, 1)
    assert not blobs.exists(old_sha) and blobs.exists(new_sha)

    # a collector that died between moving a file to the trash and committing its delete: the
    # row is still there, so the file is restored; trash whose row is gone is removed
    kept, _ = _store(new_session, blobs, tmp_path, b"row still there")
    gone = blobs.trash(new_sha)
    stale = blobs.trash(kept)
    assert gone is not None and stale is not None
    old_ns = time.time_ns() - int(2 * HOUR * 1e9)
    for path in (gone, stale):
        sha, _, rest = path.name.split(".")
        path.rename(path.with_name(f"{sha}.{old_ns}.{rest}"))
    report = collect(new_session, blobs, grace_s=HOUR, pins=pinned_blob_paths())
    assert report.settled_trash == 2
    assert blobs.exists(kept) and not blobs.exists(new_sha)
    assert not list(blobs.trashed())


def _violations(new_session: sessionmaker[Session], blobs: BlobStore, stop: threading.Event,
                found: list[str]) -> None:
    """A reader: every upload that existed before and after a look must have had its file."""
    while not stop.is_set():
        with new_session() as session:
            before = dict(session.execute(select(Upload.id, Upload.sha256)).all())
        missing = {i for i, sha in before.items() if not blobs.exists(sha)}
        with new_session() as session:
            after = set(session.scalars(select(Upload.id)))
        found.extend(f"upload {i} ({before[i][:12]}) had no file" for i in missing & after)


def test_writers_racing_the_collector_never_lose_a_referenced_blob(
        new_session: sessionmaker[Session], blobs: BlobStore, user_id: int, tmp_path: Path
) -> None:
    contents = [f"content {i}".encode() * 100 for i in range(12)]  # few: shas recur at once
    stop = threading.Event()
    violations: list[str] = []
    counts = {"kept": 0, "removed": 0}

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[str] = []
        while not stop.is_set():
            sha, upload_id = _store(new_session, blobs, tmp_path, rng.choice(contents), user_id)
            if not blobs.exists(sha):
                violations.append(f"writer {seed}: {sha[:12]} missing right after its commit")
            counts["kept"] += 1
            mine.append(upload_id)
            while len(mine) > 2:  # the rest is garbage for the collector
                with new_session() as session:
                    session.execute(delete(Upload).where(
                        Upload.id == mine.pop(rng.randrange(len(mine)))))
                    session.commit()

    def collector() -> None:
        while not stop.is_set():
            counts["removed"] += collect(new_session, blobs, grace_s=0,
                                         pins=pinned_blob_paths()).removed

    def run(target: Callable[..., None], *args: object) -> threading.Thread:
        def body() -> None:
            try:
                target(*args)
            except Exception as exc:  # noqa: BLE001 (a failed thread fails the test)
                violations.append(f"{target.__name__}: {type(exc).__name__}: {exc}")
                stop.set()
        thread = threading.Thread(target=body)
        thread.start()
        return thread

    threads = [run(writer, i) for i in range(4)] + [run(collector) for _ in range(2)]
    threads.append(run(_violations, new_session, blobs, stop, violations))
    time.sleep(8)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not violations, violations[:5]
    backend = new_session.kw["bind"].dialect.name
    print(f"\nblob race ({backend}, 8 s): 4 writers kept {counts['kept']} uploads of 12 "
          f"contents, 2 collectors with no grace period removed {counts['removed']} blobs; "
          "no referenced blob missing")
    assert counts["removed"] >= 5 and counts["kept"] >= 50, counts  # the race was run
    with new_session() as session:
        referenced = set(session.scalars(select(Upload.sha256)))
    assert all(blobs.exists(sha) for sha in referenced)
