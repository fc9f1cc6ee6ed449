"""/v1/jobs: read, list and cancel jobs (submitting: api/routers/submit.py). A caller sees only
its own jobs."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from sqlalchemy.orm import selectinload

from api.deps import CeleryDep, CurrentUser, SessionDep, SettingsDep, released
from api.errors import excerpt
from api.schemas.jobs import JobOut, JobPage, JobStatus, KindName
from api.submission import get_own_job
from jobs.dispatch import revoke_job
from jobs.ownership import own_jobs
from jobs.queue_wait import queue_spots
from jobs.state import cancel_job
from store.blobs import touch_blobs
from store.models import QUEUED, RUNNING, TERMINAL, Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut)
def read_job(job_id: str, session: SessionDep, user: CurrentUser,
             settings: SettingsDep) -> JobOut:
    """The job; queued or running, with its place in the queue and its wait (`queue`)."""
    job = get_own_job(session, user, job_id)
    spots = queue_spots(session, settings) if job.status in (QUEUED, RUNNING) else {}
    return released(session, JobOut.from_row(job, spots.get(job.pk)))


_MAX_PK = 2**31 - 1  # jobs.pk is an INTEGER: 32 bits on Postgres


def _decode_cursor(cursor: str) -> int:
    """The job pk a cursor names; 422 for anything else, before the database sees it (SQLite
    cannot even bind an integer past 64 bits)."""
    try:
        if len(cursor) > 16:
            raise ValueError("too long")
        pk = int(base64.urlsafe_b64decode(cursor.encode() + b"==").decode())
        if not 0 < pk <= _MAX_PK:
            raise ValueError("out of range")
        return pk
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=f"cursor: {excerpt(cursor)} is not a cursor returned by this endpoint",
        ) from None


def _encode_cursor(pk: int) -> str:
    return base64.urlsafe_b64encode(str(pk).encode()).decode().rstrip("=")


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    user: CurrentUser,
    settings: SettingsDep,
    kind: KindName | None = None,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JobPage:
    """The caller's jobs, newest first."""
    query = own_jobs(user.id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if status_ is not None:
        query = query.where(Job.status == status_)
    if cursor:
        query = query.where(Job.pk < _decode_cursor(cursor))
    query = query.options(selectinload(Job.shards), selectinload(Job.artifacts))
    rows = session.scalars(query.order_by(Job.pk.desc()).limit(limit + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    spots = (queue_spots(session, settings)
             if any(j.status in (QUEUED, RUNNING) for j in rows) else {})
    return released(session, JobPage(items=[JobOut.from_row(j, spots.get(j.pk)) for j in rows],
                                     next_cursor=_encode_cursor(rows[-1].pk) if more else None))


@router.post("/{job_id}/cancel", status_code=status.HTTP_202_ACCEPTED, response_model=JobOut)
def cancel(job_id: str, session: SessionDep, user: CurrentUser, celery: CeleryDep) -> JobOut:
    """Stops a queued or running job: revokes its messages; running shards stop cooperatively."""
    job = get_own_job(session, user, job_id)
    if job.status in TERMINAL or not cancel_job(session, job):
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job_id!r} is already {job.status}; nothing to cancel")
    revoke_job(celery, job)
    return released(session, JobOut.from_row(job))


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(job_id: str, session: SessionDep, user: CurrentUser) -> Response:
    """Forgets a finished job, its shards and artifacts: their sizes no longer count against
    the caller's storage (NADS_MAX_STORAGE_BYTES_PER_USER), and the blob collector removes
    the files nothing else references (store/blobgc.py). 409 while it is queued or running
    (cancel it first). A queued job that names it as its source fails when it runs."""
    job = get_own_job(session, user, job_id)
    if job.status not in TERMINAL:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            detail=f"job {job_id!r} is {job.status}; cancel it before deleting")
    touch_blobs(session, [a.sha256 for a in job.artifacts] + [s.partial_sha256 for s in job.shards])
    session.delete(job)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
