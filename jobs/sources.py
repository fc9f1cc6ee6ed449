"""The NAD result a probe or poison job reads (`resolve_nads`), for the user who submits it:
one of their succeeded NAD jobs, a ready catalog entry (public), or one of their uploaded .npy
arrays. Admission resolves it, checks it and pins its sha256 in the stored spec; a worker
reads the pinned blob (a job stored before pinning resolves it again, the same way)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.errors import SpecError
from jobs.ownership import own_job
from jobs.ownership import own_upload as _own_upload
from store.models import (
    CATALOG_READY,
    DATASET_UPLOAD,
    NADS,
    NADS_UPLOAD,
    SUCCEEDED,
    Artifact,
    CatalogEntry,
    Job,
    Upload,
)

RefT = TypeVar("RefT", bound=BaseModel)


@dataclass(frozen=True)
class NADSource:
    """A resolved NAD result: the `spec` and `summary` of the NAD job that made it (the keys
    `input_shape` and `num_nads` a probe or poison spec is checked against; None and {} for an
    uploaded array), the sha256 of its nads.npy, and what messages and figures call it."""

    spec: dict[str, Any] | None
    summary: dict[str, Any]
    sha256: str
    what: str


def _nads_artifact(session: Session, job: Job) -> str | None:
    return session.scalar(select(Artifact.sha256).where(Artifact.job_pk == job.pk,
                                                        Artifact.name == "nads.npy"))


def catalog_nads(session: Session, arch: str, field: str) -> NADSource:
    """The ready catalog entry `arch` (public: any user may use it), built (its final round's
    job) or shipped (catalog_data/, no job: its provenance); `SpecError` naming `field`
    otherwise."""
    what = f"the catalog's {arch!r}"
    entry = session.scalar(select(CatalogEntry).where(CatalogEntry.name == arch))
    if entry is not None and entry.status == CATALOG_READY:
        if entry.job_pk is not None:
            job = session.get(Job, entry.job_pk)
            sha = _nads_artifact(session, job)
            if sha is None:
                raise SpecError(field, f"{what} has no nads.npy", arch)
            return NADSource(job.spec, job.summary or {}, sha, what)
        if entry.sha256 is not None and entry.provenance is not None:
            return NADSource(entry.spec, {"num_nads": int(entry.provenance["num_nads"]),
                                          "num_networks": entry.networks}, entry.sha256, what)
    ready = session.scalars(select(CatalogEntry.name)
                            .where(CatalogEntry.status == CATALOG_READY)).all()
    raise SpecError(field, f"{arch!r} is not a ready catalog entry; ready: "
                    f"{', '.join(ready) or 'none yet'} (GET /v1/catalog)", arch)


def own_upload(session: Session, user_id: int, upload_id: str, kind: str, field: str) -> Upload:
    """The caller's upload of `kind`; another user's reads exactly like a missing one."""
    row = _own_upload(session, user_id, upload_id)
    if row is None:
        raise SpecError(field, f"no upload {upload_id!r} of yours", upload_id)
    if row.kind != kind:
        want = ".npz dataset" if kind == DATASET_UPLOAD else ".npy NAD array"
        raise SpecError(field, f"upload {upload_id!r} is a {row.kind} upload, not a {want}",
                        upload_id)
    return row


def pin_nads(ref: RefT, source: NADSource) -> RefT:
    """The reference `ref` with the sha256 of the NAD result it resolved to (`resolve_nads`),
    for the stored spec: the worker reads that blob, whatever the source becomes."""
    return ref.model_copy(update={"sha256": source.sha256})


def resolve_nads(session: Session, user_id: int, ref: Any, field: str, use: str) -> NADSource:
    """The NAD result `ref` names (its `job`, `catalog` or `upload`: a probe's nad directions,
    a poison job's nads) for user `user_id`: their succeeded NAD job, a ready catalog entry or
    their .npy upload; `SpecError` naming `<field>.job` (`.catalog`, `.upload`) otherwise.
    `use` ends the message for a NAD job that has not succeeded ("be probed"). Another user's
    job or upload reads as a missing one."""
    if getattr(ref, "upload", None) is not None:
        row = own_upload(session, user_id, ref.upload, NADS_UPLOAD, f"{field}.upload")
        return NADSource(None, {}, row.sha256, f"upload {ref.upload!r}")
    if ref.catalog is not None:
        return catalog_nads(session, ref.catalog, f"{field}.catalog")
    field = f"{field}.job"
    if ref.job is None:
        raise SpecError(field, "required: the id of one of your succeeded NAD jobs (or "
                        "`catalog`: a ready entry of GET /v1/catalog)")
    job = own_job(session, user_id, ref.job)
    if job is None:
        raise SpecError(field, f"no job {ref.job!r} of yours", ref.job)
    if job.kind != NADS:
        raise SpecError(field, f"job {ref.job!r} is a {job.kind} job, not a NAD job", ref.job)
    what = f"NAD job {ref.job!r}"
    if job.status != SUCCEEDED:
        raise SpecError(field, f"{what} is {job.status}; only a succeeded NAD job can {use}",
                        ref.job)
    sha = _nads_artifact(session, job)
    if sha is None:
        raise SpecError(field, f"{what} has no nads.npy", ref.job)
    return NADSource(job.spec, job.summary or {}, sha, what)
