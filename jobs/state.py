"""Moves job and shard rows. Every transition is a conditional UPDATE, so duplicate or late
messages (redelivery, reconciler, cancel racing a worker) cannot move a row backwards."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from store.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Job,
    Shard,
    utcnow,
)
from store.settings import Settings


def load_job(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id))


def claim_shard(session: Session, job: Job, shard: Shard, task_id: str | None,
                settings: Settings, worker: str | None = None) -> bool:
    """Marks the shard running for this task (on `worker`); False when the work is done or
    owned elsewhere.

    A shard is taken when it is queued, when this very message is a redelivery (same task id:
    its previous run died), or when the process running it stopped beating: its heartbeat is
    older than `heartbeat_timeout_s` (a shard claimed before heartbeats existed: its
    `updated_at` older than `stale_after_s`).
    """
    if job.status in TERMINAL or shard.status in (SUCCEEDED, CANCELLED, FAILED):
        return False
    now = utcnow()
    if shard.heartbeat_at is not None:
        fresh = now - shard.heartbeat_at < timedelta(seconds=settings.heartbeat_timeout_s)
    else:
        fresh = now - shard.updated_at < timedelta(seconds=settings.stale_after_s)
    if shard.status == RUNNING and shard.task_id != task_id and fresh:
        return False
    shard.status = RUNNING
    shard.task_id = task_id or shard.task_id
    shard.worker = worker
    shard.heartbeat_at = now
    shard.attempts += 1
    shard.started_at = now
    shard.updated_at = now
    shard.fraction = 0.0
    shard.error = None
    session.execute(
        update(Job)
        .where(Job.pk == job.pk, Job.status == QUEUED)
        .values(status=RUNNING, started_at=now, updated_at=now)
    )
    session.commit()
    return True


def record_progress(session: Session, shard_id: int, fraction: float) -> None:
    now = utcnow()
    session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.status == RUNNING)
        .values(fraction=fraction, updated_at=now)
    )
    session.commit()


def is_stopped(session: Session, job_pk: int, shard_id: int | None = None,
               task_id: str | None = None) -> bool:
    """True when the job was cancelled (or failed elsewhere), or, given the shard and the task
    that runs it, when the shard is no longer that task's (preempted: `preempt_shard`; or
    taken over by a later message): the shard should stop."""
    status = session.scalar(select(Job.status).where(Job.pk == job_pk))
    if status in (CANCELLED, FAILED, None):
        return True
    if shard_id is None:
        return False
    owned = session.scalar(select(func.count()).select_from(Shard).where(
        Shard.id == shard_id, Shard.status == RUNNING, Shard.task_id == task_id))
    return not owned


def preempt_shard(session: Session, shard_id: int, task_id: str | None) -> bool:
    """Takes a running shard back from the task running it: held again (queued, no task id:
    `jobs.dispatch` sends it when its user's turn comes), the attempt not counted (it was
    stopped, it did not fail). The task sees it at its next stop check and drops its work.
    False when the shard had moved on meanwhile."""
    result = session.execute(
        update(Shard)
        .where(Shard.id == shard_id, Shard.status == RUNNING, Shard.task_id == task_id)
        .values(status=QUEUED, task_id=None, worker=None, fraction=0.0,
                attempts=Shard.attempts - 1, updated_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1


def cancel_own_shard(session: Session, shard_id: int, task_id: str | None) -> None:
    """A task stopped by `is_stopped`: its shard becomes cancelled if it is still the task's
    (a preempted shard stays held for its next run)."""
    now = utcnow()
    session.execute(update(Shard)
                    .where(Shard.id == shard_id, Shard.status == RUNNING,
                           Shard.task_id == task_id)
                    .values(status=CANCELLED, finished_at=now, updated_at=now))
    session.commit()


def finish_shard(session: Session, shard_id: int, status: str, *,
                 partial_sha256: str | None = None, error: str | None = None) -> None:
    now = utcnow()
    values = {"status": status, "finished_at": now, "updated_at": now, "error": error}
    if status == SUCCEEDED:
        values |= {"fraction": 1.0, "partial_sha256": partial_sha256}
    session.execute(update(Shard).where(Shard.id == shard_id).values(**values))
    session.commit()


def claim_merge(session: Session, job_pk: int) -> bool:
    """True exactly once, when every shard has succeeded: the caller then sends the merge."""
    pending = session.scalar(
        select(func.count()).select_from(Shard)
        .where(Shard.job_pk == job_pk, Shard.status != SUCCEEDED)
    )
    if pending:
        return False
    result = session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status == RUNNING, Job.merge_status.is_(None))
        .values(merge_status=QUEUED, updated_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1


def fail_job(session: Session, job_pk: int, error: str) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status.in_((QUEUED, RUNNING)))
        .values(status=FAILED, error=error[:4000], finished_at=now, updated_at=now)
    )
    session.commit()


def cancel_job(session: Session, job: Job) -> bool:
    """Marks a queued or running job cancelled; False when it had already finished."""
    now = utcnow()
    # Shards before the job: the same lock order as claim_shard, or the two deadlock.
    session.execute(
        update(Shard)
        .where(Shard.job_pk == job.pk, Shard.status == QUEUED)
        .values(status=CANCELLED, finished_at=now, updated_at=now)
    )
    result = session.execute(
        update(Job)
        .where(Job.pk == job.pk, Job.status.in_((QUEUED, RUNNING)))
        .values(status=CANCELLED, finished_at=now, updated_at=now)
    )
    session.commit()
    session.refresh(job)
    return result.rowcount == 1
