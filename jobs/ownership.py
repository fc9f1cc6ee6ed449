"""A user's rows. Every read of a job, upload or architecture on behalf of a user goes through
here, so "another user's row reads exactly like a missing one" holds in one place."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from store.models import Architecture, Job, Upload


def own_job(session: Session, user_id: int, job_id: str) -> Job | None:
    """The user's job `job_id`; None for a missing job and for another user's."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user_id))


def own_jobs(user_id: int) -> Select[tuple[Job]]:
    """The query of the user's jobs (the caller adds filters, order and paging)."""
    return select(Job).where(Job.user_id == user_id)


def own_upload(session: Session, user_id: int, upload_id: str) -> Upload | None:
    """The user's upload `upload_id`; None for a missing upload and for another user's."""
    return session.scalar(select(Upload).where(Upload.id == upload_id,
                                               Upload.user_id == user_id))


def own_architecture(session: Session, user_id: int, architecture_id: str
                     ) -> Architecture | None:
    """The user's architecture `architecture_id`; None for a missing one and another user's."""
    return session.scalar(select(Architecture).where(Architecture.id == architecture_id,
                                                     Architecture.user_id == user_id))
