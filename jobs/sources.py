"""References of probe and poison jobs resolved to blobs, for the user who submitted them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import CATALOG_READY, NADS, SUCCEEDED, Artifact, CatalogEntry, Job


class SourceError(ValueError):
    """A job's reference (NAD job, upload) no longer resolves; the message names the field."""


def nads_blob_of_job(session: Session, user_id: int, job_id: str, field: str) -> str:
    """sha256 of the `nads.npy` of `job_id`, which must be a succeeded NAD job of the user."""
    job = session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user_id))
    if job is None or job.kind != NADS or job.status != SUCCEEDED:
        raise SourceError(f"{field}: NAD job {job_id!r} is no longer a succeeded NAD job of "
                          "this user")
    artifact = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk,
                                                     Artifact.name == "nads.npy"))
    if artifact is None:
        raise SourceError(f"{field}: NAD job {job_id!r} has no nads.npy")
    return artifact.sha256


def catalog_job(session: Session, arch: str, field: str) -> Job:
    """The final NAD job of the ready catalog entry `arch` (public: any user may use it)."""
    entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == arch))
    if entry is None or entry.status != CATALOG_READY or entry.job_pk is None:
        ready = session.scalars(select(CatalogEntry.name)
                                .where(CatalogEntry.status == CATALOG_READY)).all()
        raise SourceError(f"{field}: {arch!r} is not a ready catalog entry; ready: "
                          f"{', '.join(ready) or 'none yet'} (GET /v1/catalog)")
    return session.get(Job, entry.job_pk)


def nads_blob_of_catalog(session: Session, arch: str, field: str) -> str:
    """sha256 of the catalog's `nads.npy` of `arch`."""
    job = catalog_job(session, arch, field)
    artifact = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk,
                                                     Artifact.name == "nads.npy"))
    if artifact is None:
        raise SourceError(f"{field}: the catalog's {arch!r} has no nads.npy")
    return artifact.sha256
