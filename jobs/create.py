"""Job creation: the job row and one shard row per range, committed, then the shards sent."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from jobs.dispatch import enqueue_job
from store.models import Job, Shard


def create_job(session: Session, app: Celery, *, user_id: int, api_key_id: int | None,
               kind: str, mode: str, spec: dict[str, Any], estimate: dict[str, Any] | None,
               ranges: list[tuple[int, int]]) -> Job:
    """Writes the job (of `user_id`, submitted with `api_key_id`) and its shards, commits, then
    sends the shards. A broker that is down is not an error: the rows say queued, and the
    reconciler sends the messages (jobs/dispatch.py)."""
    job = Job(id=uuid.uuid4().hex, user_id=user_id, api_key_id=api_key_id, kind=kind,
              mode=mode, spec=spec, estimate=estimate)
    job.shards = [Shard(index=i, start=a, stop=b) for i, (a, b) in enumerate(ranges)]
    session.add(job)
    session.commit()
    enqueue_job(app, session, job)
    return job
