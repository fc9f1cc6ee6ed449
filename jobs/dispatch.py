"""Enqueueing by task name: used by the API, the reconciler and the tasks themselves."""

from __future__ import annotations

import logging
import uuid

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.broker import CATALOG_QUEUE, MERGE, RUN_SHARD, RUN_WHOLE, VALIDATE_ARCHITECTURE
from store.auth import CATALOG_USER
from store.models import SEQUENTIAL, Job, Shard, User, utcnow

log = logging.getLogger(__name__)


def _send(app: Celery, name: str, args: list, task_id: str, queue: str | None = None) -> bool:
    """Sends one message (to the task's routed queue, or `queue`); False (and a log line) when
    the broker is unreachable.

    A message that could not be sent is not an error for the caller: the row says the work is
    queued, and the reconciler sends it again.
    """
    route = {"queue": queue, "routing_key": queue} if queue else {}
    try:
        app.send_task(name, args=args, task_id=task_id, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0.2}, **route)
        return True
    except Exception:  # noqa: BLE001 (any broker failure is recovered from the row)
        log.exception("could not enqueue %s%s", name, args)
        return False


def enqueue_shard(app: Celery, session: Session, job: Job, shard: Shard) -> bool:
    """Records a fresh task id on the shard row, commits, then sends the message."""
    shard.task_id = uuid.uuid4().hex
    shard.updated_at = utcnow()
    session.commit()
    name = RUN_WHOLE if job.mode == SEQUENTIAL else RUN_SHARD
    args = [job.id] if job.mode == SEQUENTIAL else [job.id, shard.index]
    owner = session.scalar(select(User.name).where(User.id == job.user_id))
    return _send(app, name, args, shard.task_id,
                 CATALOG_QUEUE if owner == CATALOG_USER else None)


def enqueue_job(app: Celery, session: Session, job: Job) -> None:
    """Sends every shard; stops at the first broker failure (the reconciler sends the rest)."""
    for shard in job.shards:
        if not enqueue_shard(app, session, job, shard):
            return


def enqueue_merge(app: Celery, job_id: str) -> bool:
    return _send(app, MERGE, [job_id], uuid.uuid4().hex)


def enqueue_validation(app: Celery, architecture_id: str) -> bool:
    """Queues the validation of an uploaded architecture (worker/architectures.py)."""
    return _send(app, VALIDATE_ARCHITECTURE, [architecture_id], uuid.uuid4().hex)


def revoke_job(app: Celery, job: Job) -> None:
    """Best effort: drops queued messages; running shards stop at their next cooperative check."""
    ids = [s.task_id for s in job.shards if s.task_id]
    if not ids:
        return
    try:
        app.control.revoke(ids)
    except Exception:  # noqa: BLE001 (the row already says cancelled; workers check it)
        log.warning("revoke failed for job %s", job.id, exc_info=True)
