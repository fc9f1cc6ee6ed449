"""References of probe and poison jobs resolved to blobs, for the user who submitted them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class CatalogNADs:
    """A ready catalog entry as a NAD source: its NAD job's `spec` and `summary` (the keys
    `input_shape` and `num_nads` a probe or poison spec is checked against) and its nads.npy.
    A built entry takes them from its final round's job; a shipped one (catalog_data/, no job)
    from its provenance."""

    spec: dict[str, Any]
    summary: dict[str, Any]
    nads_sha256: str


def catalog_nads(session: Session, arch: str, field: str) -> CatalogNADs:
    """The ready catalog entry `arch` (public: any user may use it), built or shipped."""
    entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == arch))
    if entry is not None and entry.status == CATALOG_READY:
        if entry.job_pk is not None:
            job = session.get(Job, entry.job_pk)
            artifact = session.scalar(select(Artifact).where(Artifact.job_pk == job.pk,
                                                             Artifact.name == "nads.npy"))
            if artifact is None:
                raise SourceError(f"{field}: the catalog's {arch!r} has no nads.npy")
            return CatalogNADs(job.spec, job.summary or {}, artifact.sha256)
        if entry.sha256 is not None and entry.provenance is not None:
            return CatalogNADs(entry.spec, {"num_nads": int(entry.provenance["num_nads"]),
                                            "num_networks": entry.networks}, entry.sha256)
    ready = session.scalars(select(CatalogEntry.name)
                            .where(CatalogEntry.status == CATALOG_READY)).all()
    raise SourceError(f"{field}: {arch!r} is not a ready catalog entry; ready: "
                      f"{', '.join(ready) or 'none yet'} (GET /v1/catalog)")


def nads_blob_of_catalog(session: Session, arch: str, field: str) -> str:
    """sha256 of the catalog's `nads.npy` of `arch`."""
    return catalog_nads(session, arch, field).nads_sha256
