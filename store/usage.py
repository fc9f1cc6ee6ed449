"""What a user makes the service store, counted from the database: the per-user storage quota
(`NADS_MAX_STORAGE_BYTES_PER_USER`, enforced by api/storage.py).

A user's usage is the sum of the sizes of the rows they own: uploads, uploaded architectures,
and their jobs' stored results (artifacts and the shards' partial results, which stay for
merges and for the catalog's reuse). A blob shared by two rows counts for each: content
addressing is the service's saving, not the user's, and counting shared bytes once would let
one user's quota depend on another's deletions. Queued and running jobs also reserve their
estimated result bytes, so that many jobs submitted at once cannot together pass the quota.
Deleting a row frees its bytes at once (the file itself goes when the blob collector,
store/blobgc.py, finds nothing referencing it). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.models import TERMINAL, Architecture, Artifact, Blob, Job, Shard, Upload, User


@dataclass(frozen=True)
class Usage:
    """Bytes one user's rows occupy, by kind."""

    uploads: int
    architectures: int
    artifacts: int
    partials: int
    reserved: int  # estimated results of the user's queued and running jobs

    @property
    def total(self) -> int:
        return self.uploads + self.architectures + self.artifacts + self.partials + self.reserved

    def describe(self) -> str:
        return (f"uploads {self.uploads:,}, architectures {self.architectures:,}, job results "
                f"{self.artifacts + self.partials:,}, running jobs' estimates {self.reserved:,}")


def estimated_result_bytes(estimate: dict[str, Any] | None) -> int:
    """What a job is expected to store: a NAD job's partial results (`result_bytes`), a probe
    job's directions (`directions_bytes`), a poison job's kept training sets
    (`kept_dataset_bytes`); at least 1 byte (every job stores something)."""
    estimate = estimate or {}
    stored = sum(int(estimate.get(name) or 0)
                 for name in ("result_bytes", "directions_bytes", "kept_dataset_bytes"))
    return max(1, stored)


def usage(session: Session, user_id: int) -> Usage:
    """The user's usage now (the caller's transaction: lock_user first to make it exact)."""

    def total(query: Any) -> int:
        return int(session.scalar(query) or 0)

    uploads = total(select(func.sum(Upload.size)).where(Upload.user_id == user_id))
    architectures = total(select(func.sum(Architecture.size))
                          .where(Architecture.user_id == user_id))
    artifacts = total(select(func.sum(Artifact.size)).join(Job, Job.pk == Artifact.job_pk)
                      .where(Job.user_id == user_id))
    partials = total(select(func.sum(Blob.size))
                     .select_from(Shard).join(Job, Job.pk == Shard.job_pk)
                     .join(Blob, Blob.sha256 == Shard.partial_sha256)
                     .where(Job.user_id == user_id))
    estimates = session.scalars(select(Job.estimate).where(
        Job.user_id == user_id, Job.status.not_in(TERMINAL))).all()
    reserved = sum(estimated_result_bytes(e) for e in estimates)
    return Usage(uploads, architectures, artifacts, partials, reserved)


def lock_user(session: Session, user_id: int) -> None:
    """Serializes the quota checks of one user until the caller commits: Postgres locks the
    user's row; SQLite (which ignores FOR UPDATE) takes its write lock by a no-op UPDATE."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(User).where(User.id == user_id).values(id=User.id))
    else:
        session.execute(select(User.id).where(User.id == user_id).with_for_update())
