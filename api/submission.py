"""What the job routes share: the caller's job (or 404) and a submitted job's response."""

from __future__ import annotations

from typing import Any

from celery import Celery
from fastapi import Response
from sqlalchemy.orm import Session

from api.deps import released
from api.own_rows import get_own
from api.schemas.jobs import JobOut
from jobs.create import create_job
from jobs.queue_wait import queue_spots
from store.models import ApiKey, Job, User
from store.settings import Settings, get_settings


def get_own_job(session: Session, user: User, job_id: str) -> Job:
    """The caller's job, by its id or a unique prefix (jobs/ownership.py); 404 for a job that
    does not exist and for another user's, 409 for a prefix of several of the caller's."""
    return get_own(session, Job, user, job_id, "job_id")


def submit_job(session: Session, celery: Celery, key: ApiKey, response: Response, *,
               kind: str, mode: str, spec: dict[str, Any], estimate: dict[str, Any] | None,
               ranges: list[tuple[int, int]], settings: Settings | None = None) -> JobOut:
    """Creates the job of the key's user (jobs/create.py) and answers with it, its place in
    the queue and its `Location`."""
    job = create_job(session, celery, user_id=key.user_id, api_key_id=key.id, kind=kind,
                     mode=mode, spec=spec, estimate=estimate, ranges=ranges, settings=settings)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    spot = queue_spots(session, settings or get_settings()).get(job.pk)
    return released(session, JobOut.from_row(job, spot))
