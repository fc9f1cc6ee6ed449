"""Content-addressed blob store on a directory: `<root>/<sha[:2]>/<sha>`.

A blob is written to a temporary file in the same directory tree and renamed into place, so a
reader either sees the whole file or none. Blobs are immutable; writing the same bytes twice is
a no-op that returns the same address.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from sqlalchemy.orm import Session

from store.models import Blob

_SHA = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, sha256: str) -> Path:
        if not _SHA.match(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put_file(self, source: Path) -> tuple[str, int]:
        """Copy `source` into the store; returns (sha256, size)."""
        tmp_dir = self.root / "tmp"
        try:
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        except OSError as exc:
            raise OSError(exc.errno, f"blob store {self.root} cannot take {source.name}: "
                          f"{exc.strerror or exc}") from exc
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            sha = digest.hexdigest()
            final = self.path(sha)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_name, final)
            return sha, size
        except OSError as exc:
            Path(tmp_name).unlink(missing_ok=True)
            raise OSError(exc.errno, f"blob store {self.root} cannot take {source.name} "
                          f"({size:,} bytes written): {exc.strerror or exc}") from exc
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def adopt(self, tmp_path: Path, sha256: str) -> Path:
        """Moves a complete, fsynced file that hashes to `sha256` (written under `tmp_dir()`)
        into place; used by streamed uploads, which hash while they write."""
        final = self.path(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        return final

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
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=tmp_dir, prefix="ready-"):
            pass


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def record_blob(session: Session, sha256: str, size: int) -> Blob:
    """Registers a stored blob in the database (idempotent)."""
    blob = session.get(Blob, sha256)
    if blob is None:
        blob = Blob(sha256=sha256, size=size)
        session.add(blob)
        session.flush()
    return blob
