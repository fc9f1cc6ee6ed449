"""Job creation: the job row and one shard row per range, committed, then the shards sent."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from jobs.dispatch import dispatch_pending
from store.models import Job, Shard
from store.settings import Settings, get_settings


def create_job(session: Session, app: Celery, *, user_id: int, api_key_id: int | None,
               kind: str, mode: str, spec: dict[str, Any], estimate: dict[str, Any] | None,
               ranges: list[tuple[int, int]], settings: Settings | None = None) -> Job:
    """Writes the job (of `user_id`, submitted with `api_key_id`) and its shards, commits, then
    sends as many shards as there are free slots, fairly between users (the rest go as shards
    finish: `jobs.dispatch.dispatch_pending`). A broker that is down is not an error: the rows
    say queued, and the reconciler sends the messages (jobs/dispatch.py)."""
    job = Job(id=uuid.uuid4().hex, user_id=user_id, api_key_id=api_key_id, kind=kind,
              mode=mode, spec=spec, estimate=estimate)
    job.shards = [Shard(index=i, start=a, stop=b) for i, (a, b) in enumerate(ranges)]
    session.add(job)
    session.commit()
    dispatch_pending(app, session, settings or get_settings())
    session.refresh(job)
    return job
