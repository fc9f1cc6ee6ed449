"""Content-addressed blob store on a directory: `<root>/<sha[:2]>/<sha>`.

A blob is written to a temporary file in the same directory tree and renamed into place, so a
reader either sees the whole file or none. Blobs are immutable; writing the same bytes twice is
a no-op that returns the same address.

Writers that keep a blob (a row will reference it) follow the protocol that makes the garbage
collector safe (store/blobgc.py, where the argument is written): stage the bytes (`stage`:
hashed into `tmp/`), then in the transaction that inserts the referencing row, `keep_blob`:
record the blob's row (`record_blob`: insert or refresh `touched_at`) FIRST, then move the
file into place, then insert the reference and commit. The collector's file operations are the
small methods `trash`, `restore` and `remove`.

Two backends implement the same `Blobs` interface: this directory (the embedded default, or a
shared POSIX filesystem such as NFS mounted at `NADS_BLOB_DIR` on every node) and an
S3-compatible bucket (store/blobs_s3.py, `NADS_BLOB_URL=s3://bucket/prefix`), which lets GPU
workers on other hosts share blobs with the API. `open_blob_store(settings)` picks one; every
process builds its store through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from store.models import Blob, utcnow

if TYPE_CHECKING:
    from store.settings import Settings

_SHA = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
# What `read_range` yields at a time: a download's memory per client, which a client that stops
# reading holds for as long as it likes (as FileResponse's 64 KiB).
SEND_CHUNK = 64 << 10
TRASH = "trash"  # <root>/trash/<sha>.<time_ns>.<random>: a blob the collector is removing


@dataclass
class Staged:
    """Bytes hashed into the store's tmp/ folder, not yet in place (`BlobStore.stage`)."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        """Removes the staged file if it was never moved into place."""
        self.path.unlink(missing_ok=True)


class Blobs(Protocol):
    """What readers, writers and the collector use of a blob store. `path` gives a local file
    (the S3 store downloads it into its read-through cache first); a missing blob's path is
    not a file. `remote` stores serve downloads with `size` and `read_range` (api/files.py)."""

    remote: bool

    @property
    def location(self) -> str: ...
    def path(self, sha256: str) -> Path: ...
    def exists(self, sha256: str) -> bool: ...
    def size(self, sha256: str) -> int | None: ...
    def read_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]: ...
    def put_file(self, source: Path) -> tuple[str, int]: ...
    def adopt(self, tmp_path: Path, sha256: str) -> Path: ...
    def stage(self, source: Path) -> Staged: ...
    def put(self, staged: Staged) -> Path: ...
    def trash(self, sha256: str) -> object | None: ...
    def restore(self, trashed: object) -> None: ...
    def remove(self, trashed: object) -> None: ...
    def trashed(self) -> Iterator[tuple[object, str, float]]: ...
    def stored(self) -> Iterator[tuple[str, int, float]]: ...
    def clean_tmp(self, older_than_s: float) -> int:
        """Removes files left in tmp/ (by a writer that died) older than `older_than_s`."""
        return remove_older(self.root / "tmp", older_than_s)

    def tmp_dir(self) -> Path: ...
    def verify(self, sha256: str) -> bool: ...
    def check_writable(self) -> None: ...


class BlobStore:
    """The directory backend."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int | None:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            return None

    def read_range(self, sha256: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the blob, in chunks."""
        with open(self.path(sha256), "rb") as f:
            f.seek(start)
            while start < end and (chunk := f.read(min(SEND_CHUNK, end - start))):
                start += len(chunk)
                yield chunk

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy `source` into the store; returns (sha256, size)."""
        staged = self.stage(source)
        try:
            self.put(staged)
        except OSError as exc:
            staged.discard()
            raise OSError(exc.errno, f"blob store {self.root} cannot take {source.name}: "
                          f"{exc.strerror or exc}") from exc
        return staged.sha256, staged.size

    def adopt(self, tmp_path: Path, sha256: str) -> Path:
        """Moves a complete, fsynced file that hashes to `sha256` (written under `tmp_dir()`)
        into place; used by streamed uploads, which hash while they write."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        return final

    def stage(self, source: Path) -> Staged:
        """Copies `source` into tmp/ while hashing it; `put` or `keep_blob` moves it in place.
        A full or read-only store raises OSError naming the store and the file (the job's
        error says so); nothing is left behind."""
        return stage_into(self.tmp_dir, str(self.root), source)

    def put(self, staged: Staged) -> Path:
        """Moves a staged file into place (atomic rename; the same bytes replace the same)."""
        return self.adopt(staged.path, staged.sha256)

    def trash(self, sha256: str) -> Path | None:
        """Moves the blob's file into trash/ (atomic rename) and returns where; None when the
        file is not there. Readers then no longer find it; `restore` or `remove` follows."""
        folder = self.root / TRASH
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{sha256}.{time.time_ns()}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path(sha256), target)
        except FileNotFoundError:
            return None
        return target

    def restore(self, trashed: Path) -> None:
        """Puts a trashed file back in place (identical bytes may already be there again)."""
        sha = trashed.name.split(".", 1)[0]
        final = self.path(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(trashed, final)

    def remove(self, trashed: Path) -> None:
        """Deletes a trashed file for good."""
        trashed.unlink(missing_ok=True)

    def trashed(self) -> Iterator[tuple[Path, str, float]]:
        """Files in trash/: (path, sha256, seconds since they were trashed)."""
        folder = self.root / TRASH
        if not folder.is_dir():
            return
        now = time.time_ns()
        for entry in os.scandir(folder):
            parts = entry.name.split(".")
            if len(parts) == 3 and _SHA.match(parts[0]) and parts[1].isdigit():
                yield Path(entry.path), parts[0], (now - int(parts[1])) / 1e9

    def stored(self) -> Iterator[tuple[str, int, float]]:
        """Every blob file in place: (sha256, size, mtime)."""
        if not self.root.is_dir():
            return
        for folder in os.scandir(self.root):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for entry in os.scandir(folder.path):
                if _SHA.match(entry.name):
                    try:
                        st = entry.stat()
                    except FileNotFoundError:
                        continue
                    yield entry.name, st.st_size, st.st_mtime

    def clean_tmp(self, older_than_s: float) -> int:
        """Removes files left in tmp/ (by a writer that died) older than `older_than_s`."""
        return remove_older(self.root / "tmp", older_than_s)

    def tmp_dir(self) -> Path:
        """Where files bound for the store are written first (same filesystem: atomic rename)."""
        folder = self.root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def verify(self, sha256: str) -> bool:
        """True when the stored bytes still hash to their name."""
        return file_sha256(self.path(sha256)) == sha256

    def check_writable(self) -> None:
        """Raises OSError when the store cannot take a new file (used by /readyz)."""
        with tempfile.NamedTemporaryFile(dir=self.tmp_dir(), prefix="ready-"):
            pass


def stage_into(folder: Callable[[], Path], store: str, source: Path) -> Staged:
    """Copies `source` into a new file of `folder()` while hashing it (both backends stage
    locally: the S3 one uploads the staged file once its sha256, the key, is known)."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder(), prefix="stage-")
    except OSError as exc:
        raise OSError(exc.errno, f"blob store {store} cannot take {source.name}: "
                      f"{exc.strerror or exc}") from exc
    digest, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise OSError(exc.errno, f"blob store {store} cannot take {source.name} "
                      f"({size:,} bytes written): {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return Staged(Path(tmp_name), digest.hexdigest(), size)


def remove_older(folder: Path, older_than_s: float) -> int:
    """Removes the files directly in `folder` last modified more than `older_than_s` ago."""
    removed = 0
    if not folder.is_dir():
        return 0
    horizon = time.time() - older_than_s
    for entry in os.scandir(folder):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and entry.stat().st_mtime < horizon:
                os.unlink(entry.path)
                removed += 1
    return removed


_OPENED: dict[tuple[int, str, str], Blobs] = {}


def open_blob_store(settings: Settings) -> Blobs:
    """The store the settings name: the S3 bucket of `NADS_BLOB_URL` (its staging and
    read-through cache under `NADS_BLOB_DIR`), else the directory `NADS_BLOB_DIR`. One per
    process and configuration (a boto3 client is thread-safe, but must not cross a fork)."""
    key = (os.getpid(), settings.blob_url or "", str(settings.resolved_blob_dir))
    store = _OPENED.get(key)
    if store is None:
        if settings.blob_url:
            from store.blobs_s3 import S3BlobStore  # boto3 only where a bucket is used

            store = S3BlobStore.from_url(settings.blob_url, settings.resolved_blob_dir)
        else:
            store = BlobStore(settings.resolved_blob_dir)
        _OPENED[key] = store
    return store


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_blob(session: Session, sha256: str, size: int) -> None:
    """Registers a blob in the database, or refreshes its `touched_at` (one upsert statement):
    the collector keeps a blob touched within its grace period. Call it BEFORE the file is put
    in place and in the transaction that inserts the reference: while a collector deletes the
    row, this statement waits for it (row lock on Postgres, the write lock on SQLite) and then
    inserts the row anew, so the file put afterwards is never the one the collector trashes."""
    now = utcnow()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(Blob).values(sha256=sha256, size=size, created_at=now, touched_at=now)
    session.execute(statement.on_conflict_do_update(index_elements=[Blob.sha256],
                                                    set_={"touched_at": now}))


def touch_blobs(session: Session, shas: Iterable[str | None]) -> None:
    """Refreshes the blobs' `touched_at`: called where a reference goes away (a deleted upload,
    architecture or job), so a blob stays the grace period after its last reference, for
    whoever looked its sha256 up just before (a job submitted on an architecture as it is
    deleted pins the archive in its spec within that time)."""
    wanted = sorted({sha for sha in shas if sha})
    if wanted:
        session.execute(update(Blob).where(Blob.sha256.in_(wanted)).values(touched_at=utcnow()))


def keep_blob(session: Session, blobs: Blobs, staged: Staged) -> str:
    """The writer's protocol for a staged file: record (touch) the row, then move the file into
    place; the caller inserts the reference in the same transaction and commits. Returns the
    sha256. The staged file is gone afterwards either way."""
    try:
        record_blob(session, staged.sha256, staged.size)
        blobs.put(staged)
        return staged.sha256
    finally:
        staged.discard()
