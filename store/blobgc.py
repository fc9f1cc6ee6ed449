"""The blob collector: removes the blobs nothing references any more (the rows of deleted jobs,
uploads and architectures are gone), once they have been untouched for a grace period, without
ever taking a blob from a writer that is storing or referencing the same content at that moment.

References. The rows whose foreign keys name `blobs.sha256` (uploads, architectures, artifacts,
shards' partial results); the catalog's `sha256` and shipped `files`; and the blobs pinned in
the spec of a queued or running job (`pins`: the JSON paths of its sha256 fields, from
`jobs.kinds.pinned_blob_paths`): an uploaded architecture's archive, the nads.npy of a probe's
or a poison job's NAD source. The job reads them even if the user deletes the architecture,
the NAD job or the upload meanwhile, or the catalog entry is rebuilt; a finished job no longer
needs them.

Writers (store/blobs.py `keep_blob`), in the transaction that inserts the reference:
  W1. record the blob's row: insert it, or refresh `touched_at` (one upsert);
  W2. put the file in place if it is missing (atomic rename of a staged file);
  W3. insert the referencing row; commit.
The collector, for one candidate (old and unreferenced when listed), in one transaction:
  C1. delete the row, conditionally: still untouched for the grace period AND unreferenced;
  C2. only if C1 deleted it: move the file into trash/ (atomic rename);
  C3. commit; then remove the trashed file, or restore it if the commit failed.

Why a writer never loses its blob. The database orders W1 and C1, which both write the same row:
- C1 first: W1 waits until the collector commits (Postgres: the deleted row's lock; SQLite: the
  single write lock), by which time C2 has moved the file away; W1 then inserts the row anew
  and W2 finds no file and puts its own. The trashed file was taken before W2 and is not the
  writer's.
- W1 first: C1 sees a fresh `touched_at` (Postgres re-reads a row it waited for) and deletes
  nothing, so C2 never moves the file. A reference (W3), once committed, makes C1 fail on the
  foreign key even with no grace period at all, so the grace period only has to cover writers
  whose reference is not a foreign key (the catalog rows, a job's pinned architecture), which
  record their blob first and reference it within the same transaction or seconds later.
- Deleting an upload, an architecture or a job touches its blobs (`touch_blobs`), so a blob
  stays the grace period after its last reference went: a job submitted on an architecture
  while it is deleted (it read the sha256 before the delete) pins the archive within that time.
The plan this refines moved the file to trash BEFORE the conditional delete and restored it when
the delete did not happen: then a blob referenced meanwhile is missing for a moment, and a
reader in that moment fails. Here the file only moves once its row is deleted, which no
committed reference allows.

Files without a row (a writer died between W2 and its commit) older than the grace period get a
row as old as the file and go the same way. Trash left by a collector that died between C2 and
the end of C3 is settled on the next pass: restored if the row is still there and the file is
not, removed otherwise. Torch-free; runs from the worker's reconciler (`collect_if_due`) and
`nads admin gc`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, false, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from store.blobs import Blobs
from store.models import (
    TERMINAL,
    Architecture,
    Artifact,
    Blob,
    CatalogEntry,
    Job,
    Shard,
    Upload,
    utcnow,
)
from store.settings import Settings

log = logging.getLogger(__name__)

TRASH_SETTLE_S = 300.0  # a collector's C1..C3 takes milliseconds; older trash is abandoned
TMP_MAX_AGE_S = 24 * 3600.0  # a staged or uploading file untouched this long was abandoned
_last_pass: dict[str, float] = {}  # blob root -> monotonic time of this process's last pass


@dataclass
class Report:
    """What one pass did."""

    removed: int = 0
    removed_bytes: int = 0
    orphans: int = 0  # files without a row, given one (removed in the same pass)
    kept: int = 0  # candidates a writer touched or referenced meanwhile
    settled_trash: int = 0
    stale_tmp: int = 0  # abandoned files in tmp/

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def catalog_references(session: Session) -> set[str]:
    """Blobs the catalog names outside foreign keys (its nads.npy, a shipped entry's files)."""
    shas: set[str] = set()
    for sha, files in session.execute(select(CatalogEntry.sha256, CatalogEntry.files)):
        if sha:
            shas.add(sha)
        shas.update(v for v in (files or {}).values() if isinstance(v, str))
    return shas


Pins = Collection[tuple[str, ...]]  # JSON paths of the sha256 fields of a job's spec


def collectable(cutoff: datetime, also_kept: set[str], pins: Pins) -> list[ColumnElement[bool]]:
    """The conditions under which a blob row may go: untouched since `cutoff` and unreferenced."""
    pinned = or_(false(), *(Job.spec[path].as_string() == Blob.sha256 for path in sorted(pins)))
    conditions = [
        Blob.touched_at < cutoff,
        ~exists().where(Upload.sha256 == Blob.sha256),
        ~exists().where(Architecture.sha256 == Blob.sha256),
        ~exists().where(Artifact.sha256 == Blob.sha256),
        ~exists().where(Shard.partial_sha256 == Blob.sha256),
        ~exists().where(Job.status.not_in(TERMINAL), pinned),
    ]
    if also_kept:
        conditions.append(Blob.sha256.not_in(also_kept))
    return conditions


def _settle_trash(session: Session, blobs: Blobs, report: Report) -> None:
    for path, sha, age in list(blobs.trashed()):
        if age < TRASH_SETTLE_S:
            continue  # another collector's C2..C3 may be under way
        has_row = session.get(Blob, sha) is not None
        if has_row and not blobs.exists(sha):
            blobs.restore(path)  # its collector died before committing: the row is still there
        else:
            blobs.remove(path)
        report.settled_trash += 1
    session.rollback()


def _adopt_orphans(session: Session, blobs: Blobs, cutoff: datetime, report: Report) -> None:
    """Rows for files older than the cutoff that have none (touched_at = the file's mtime)."""
    known = set(session.scalars(select(Blob.sha256)))
    session.rollback()
    horizon = cutoff.replace(tzinfo=UTC).timestamp()
    rows = [{"sha256": sha, "size": size, "created_at": _naive(mtime), "touched_at": _naive(mtime)}
            for sha, size, mtime in blobs.stored() if sha not in known and mtime < horizon]
    if not rows:
        return
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    for start in range(0, len(rows), 500):
        session.execute(insert(Blob).values(rows[start:start + 500])
                        .on_conflict_do_nothing(index_elements=[Blob.sha256]))
    session.commit()
    report.orphans += len(rows)


def _naive(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC).replace(tzinfo=None)


def _remove_one(session: Session, blobs: Blobs, sha: str, size: int, grace_s: float,
                also_kept: set[str], pins: Pins, report: Report) -> None:
    cutoff = utcnow() - timedelta(seconds=grace_s)
    try:  # C1
        deleted = session.execute(
            delete(Blob).where(Blob.sha256 == sha, *collectable(cutoff, also_kept, pins))
            .execution_options(synchronize_session=False))
    except IntegrityError:  # referenced meanwhile (Postgres: the foreign key)
        session.rollback()
        report.kept += 1
        return
    if deleted.rowcount != 1:
        session.rollback()
        report.kept += 1
        return
    trashed = blobs.trash(sha)  # C2
    try:
        session.commit()  # C3
    except BaseException:
        session.rollback()
        if trashed is not None:
            blobs.restore(trashed)
        raise
    if trashed is not None:
        blobs.remove(trashed)
    report.removed += 1
    report.removed_bytes += size


def collect(new_session: Callable[[], Session], blobs: Blobs, grace_s: float, pins: Pins,
            batch: int = 10_000) -> Report:
    """One pass: settles old trash, removes abandoned tmp/ files, gives old row-less files a
    row, then removes every blob row (and file) untouched for `grace_s` seconds that nothing
    references (`pins`: where jobs' specs pin blobs), one transaction each."""
    report = Report()
    with new_session() as session:
        _settle_trash(session, blobs, report)
        report.stale_tmp = blobs.clean_tmp(TMP_MAX_AGE_S)
        cutoff = utcnow() - timedelta(seconds=grace_s)
        _adopt_orphans(session, blobs, cutoff, report)
        also_kept = catalog_references(session)
        candidates = session.execute(
            select(Blob.sha256, Blob.size).where(*collectable(cutoff, also_kept, pins))
            .limit(batch)).all()
        session.rollback()
        for sha, size in candidates:
            _remove_one(session, blobs, sha, int(size), grace_s, also_kept, pins, report)
    return report


def collect_if_due(new_session: Callable[[], Session], blobs: Blobs, settings: Settings,
                   pins: Pins) -> dict[str, Any] | None:
    """From the reconciler: a pass at most every `blob_gc_interval_s` per worker process (the
    clock is the process's own, so the store holds no marker; passes of several processes may
    overlap, which is harmless). Never raises: a failed pass is logged and retried at the next
    interval."""
    interval = settings.blob_gc_interval_s
    if interval <= 0:
        return None
    now, root = time.monotonic(), blobs.location
    if root in _last_pass and now - _last_pass[root] < interval:
        return None
    _last_pass[root] = now
    try:
        report = collect(new_session, blobs, settings.blob_gc_grace_s, pins).as_dict()
    except Exception:  # noqa: BLE001 (the reconciler must go on)
        log.exception("blob collection failed")
        return None
    if any(report.values()):
        log.info("blob collection: %s", report)
    return report
