"""Moves job, shard, architecture and catalog entry rows: every transition is a small named
function here, one conditional UPDATE (`UPDATE ... WHERE <the state the caller expects>`) that
returns whether it happened, so duplicate or late messages (redelivery, reconciler, cancel racing
a worker) cannot move a row backwards, and each caller acts on the outcome. Nothing else writes
the state of these rows but `jobs.shipped.install_entry`'s insert of a catalog entry shipped
with the repository, ready, where none was.

A shard: held (queued, no task id) -> sent (queued, a task id: `send_held_shard`, back with
`hold_shard`; sent again with a fresh id: `resend_shard`) -> running (`claim_shard`; taken back
to held: `preempt_shard`) -> succeeded or failed (`finish_shard`), or cancelled
(`cancel_own_shard`; a queued one with its job: `cancel_job`, `fail_job`). A job: queued ->
running (its first shard claimed: `claim_shard`; every shard reused: `start_job`) -> merge
queued (`claim_merge`, again: `resend_merge`) -> merge running (`start_merge`) -> succeeded
(`succeed_job`), or failed (`fail_job`; with the shard that failed it:
`fail_shard_and_job`) or cancelled (`cancel_job`) from queued or running; either way its
queued shards are cancelled with it.

An uploaded architecture: validating, held (not sent) -> sent (`send_held_validation`, back
with `hold_validation`) -> ready or rejected (`finish_validation`); deleted by its owner
unless its validation was sent (`delete_architecture`). A catalog entry: building ->
its next round started (`start_catalog_round`, the `rounds` counter the guard) and its job
attached (`attach_catalog_round`) -> ready (`finish_catalog_entry`) or failed
(`fail_catalog_entry`); a ready one built again from scratch (`restart_catalog_entry`); a
shipped one replaced by a newer shipped entry (`update_shipped_entry`).

Lock order: a transaction that moves a job's shards and the job itself updates the shards
first, then the job (`claim_shard`, `cancel_job`, `fail_shard_and_job`); the other order
deadlocks against them on PostgreSQL. Every other transition moves one row.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, func, or_, select, update
from sqlalchemy.orm import Session

from store.models import (
    CANCELLED,
    CATALOG_BUILDING,
    CATALOG_FAILED,
    CATALOG_READY,
    FAILED,
    ORIGIN_BUILT,
    ORIGIN_SHIPPED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    VALIDATING,
    Architecture,
    CatalogEntry,
    Job,
    Shard,
    utcnow,
)
from store.settings import Settings


def _task_is(task_id: str | None) -> ColumnElement[bool]:
    return Shard.task_id.is_(None) if task_id is None else Shard.task_id == task_id


def load_job(session: Session, job_id: str) -> Job | None:
    return session.scalar(select(Job).where(Job.id == job_id))


def send_held_shard(session: Session, shard_id: int) -> str | None:
    """A held shard is sent: it gets a fresh task id (the caller sends the message under it);
    None when it is no longer held (another dispatcher sent it, or it moved on)."""
    task_id = uuid.uuid4().hex
    result = session.execute(update(Shard)
                             .where(Shard.id == shard_id, Shard.status == QUEUED,
                                    Shard.task_id.is_(None))
                             .values(task_id=task_id, updated_at=utcnow()))
    session.commit()
    return task_id if result.rowcount == 1 else None


def hold_shard(session: Session, shard_id: int, task_id: str) -> bool:
    """A sent shard whose message could not leave (the broker is away) is held again; False
    when it is no longer queued under `task_id`."""
    result = session.execute(update(Shard)
                             .where(Shard.id == shard_id, Shard.status == QUEUED,
                                    Shard.task_id == task_id)
                             .values(task_id=None))
    session.commit()
    return result.rowcount == 1


def resend_shard(session: Session, shard_id: int, status: str, task_id: str | None
                 ) -> str | None:
    """A shard the caller found in `status` under `task_id` (lost: its message or its worker
    gone; or a new catalog shard) is queued again under a fresh task id, returned (the caller
    sends the message under it); None when the shard moved on meanwhile."""
    new_task_id = uuid.uuid4().hex
    result = session.execute(update(Shard)
                             .where(Shard.id == shard_id, Shard.status == status,
                                    _task_is(task_id))
                             .values(status=QUEUED, task_id=new_task_id, updated_at=utcnow()))
    session.commit()
    return new_task_id if result.rowcount == 1 else None


def claim_shard(session: Session, job: Job, shard: Shard, task_id: str | None,
                settings: Settings, worker: str | None = None) -> bool:
    """Marks the shard running for this task (on `worker`); False when the work is done or
    owned elsewhere. `shard` is refreshed from its row.

    A shard is taken when it is queued, when this very message is a redelivery (same task id:
    its previous run died), or when the process running it stopped beating: its heartbeat is
    older than `heartbeat_timeout_s` (a shard claimed before heartbeats existed: its
    `updated_at` older than `stale_after_s`). Taken only if the row is still as read here
    (status, task id, attempts): of two tasks deciding at once, one claims it.
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
    claimed = session.execute(
        update(Shard)
        .where(Shard.id == shard.id, Shard.status == shard.status, _task_is(shard.task_id),
               Shard.attempts == shard.attempts)
        .values(status=RUNNING, task_id=task_id or shard.task_id, worker=worker,
                heartbeat_at=now, attempts=shard.attempts + 1, started_at=now,
                updated_at=now, fraction=0.0, error=None)
    )
    if claimed.rowcount != 1:
        session.rollback()
        session.refresh(shard)
        return False
    session.execute(
        update(Job)
        .where(Job.pk == job.pk, Job.status == QUEUED)
        .values(status=RUNNING, started_at=now, updated_at=now)
    )
    session.commit()
    session.refresh(shard)
    return True


def beat_shard(session: Session, shard_id: int, task_id: str | None) -> bool:
    """Renews a running shard's heartbeat, only while this task still owns it."""
    result = session.execute(update(Shard)
                             .where(Shard.id == shard_id, Shard.status == RUNNING,
                                    _task_is(task_id))
                             .values(heartbeat_at=utcnow()))
    session.commit()
    return result.rowcount == 1


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


def cancel_own_shard(session: Session, shard_id: int, task_id: str | None) -> bool:
    """A task stopped by `is_stopped`: its shard becomes cancelled if it is still the task's
    (a preempted shard stays held for its next run: False)."""
    now = utcnow()
    result = session.execute(update(Shard)
                             .where(Shard.id == shard_id, Shard.status == RUNNING,
                                    Shard.task_id == task_id)
                             .values(status=CANCELLED, finished_at=now, updated_at=now))
    session.commit()
    return result.rowcount == 1


def finish_shard(session: Session, shard_id: int, status: str, *,
                 partial_sha256: str | None = None, error: str | None = None) -> bool:
    """A running shard ends: succeeded (with its partial's blob) or failed (with `error`);
    False when it was not running any more (cancelled, preempted, finished by a duplicate)."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "finished_at": now, "updated_at": now,
                              "error": error}
    if status == SUCCEEDED:
        values |= {"fraction": 1.0, "partial_sha256": partial_sha256}
    result = session.execute(update(Shard).where(Shard.id == shard_id, Shard.status == RUNNING)
                             .values(**values))
    session.commit()
    return result.rowcount == 1


def start_job(session: Session, job_pk: int) -> bool:
    """A queued job whose every shard is done already (a catalog round reusing earlier
    partials) goes running, on to its merge; False when it was not queued."""
    now = utcnow()
    result = session.execute(update(Job).where(Job.pk == job_pk, Job.status == QUEUED)
                             .values(status=RUNNING, started_at=now, updated_at=now))
    session.commit()
    return result.rowcount == 1


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


def resend_merge(session: Session, job_pk: int, silent_since: datetime) -> bool:
    """A merge sent or running but silent since before `silent_since` (its message or its
    worker lost) is queued again; True once: the caller then sends the merge again."""
    result = session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status == RUNNING,
               Job.merge_status.in_((QUEUED, RUNNING)), Job.updated_at <= silent_since)
        .values(merge_status=QUEUED, updated_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1


def start_merge(session: Session, job_pk: int) -> bool:
    """The merge task starts (again, for a redelivered message); False when the job is not
    running or its merge already succeeded."""
    result = session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status == RUNNING,
               or_(Job.merge_status.is_(None), Job.merge_status != SUCCEEDED))
        .values(merge_status=RUNNING, updated_at=utcnow())
    )
    session.commit()
    return result.rowcount == 1


def succeed_job(session: Session, job_pk: int, summary: dict[str, Any]) -> bool:
    """A running job succeeds with `summary`, its merge done; False when it is not running
    (cancelled or failed meanwhile). Not committed: the caller commits it in one transaction
    with the job's artifacts, or rolls back on False."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status == RUNNING)
        .values(status=SUCCEEDED, summary=summary, merge_status=SUCCEEDED, finished_at=now,
                updated_at=now)
    )
    return result.rowcount == 1


def fail_job(session: Session, job_pk: int, error: str) -> bool:
    """A queued or running job fails with `error` and its queued shards are cancelled; False
    when it had already finished."""
    failed = _fail_job_rows(session, job_pk, error, utcnow())
    session.commit()
    return failed


def _fail_job_rows(session: Session, job_pk: int, error: str, now: datetime) -> bool:
    """`fail_job`'s UPDATEs, uncommitted: the job's queued shards cancelled first (the lock
    order), whether held or sent (nothing will run them: a claim refuses a finished job's
    shard, and the dispatcher and the reconciler look at unfinished jobs only), then the job."""
    session.execute(update(Shard).where(Shard.job_pk == job_pk, Shard.status == QUEUED)
                    .values(status=CANCELLED, finished_at=now, updated_at=now))
    result = session.execute(
        update(Job)
        .where(Job.pk == job_pk, Job.status.in_((QUEUED, RUNNING)))
        .values(status=FAILED, error=error[:4000], finished_at=now, updated_at=now)
    )
    return result.rowcount == 1


def fail_shard_and_job(session: Session, job_pk: int, shard_id: int | None,
                       error: str) -> bool:
    """A shard's error fails its job, in one transaction, so that no reader sees the job
    failed and the shard that failed it still running or queued: the shard first (the lock
    order), failed if it was running or queued (the reconciler gives up on a lost queued
    shard too), then the job as `fail_job`, its other queued shards cancelled; returns
    whether the job failed (False: it had already finished)."""
    now = utcnow()
    if shard_id is not None:
        session.execute(update(Shard)
                        .where(Shard.id == shard_id, Shard.status.in_((QUEUED, RUNNING)))
                        .values(status=FAILED, finished_at=now, updated_at=now,
                                error=error[:4000]))
    failed = _fail_job_rows(session, job_pk, error, now)
    session.commit()
    return failed


def cancel_job(session: Session, job: Job) -> bool:
    """Marks a queued or running job cancelled; False when it had already finished."""
    now = utcnow()
    # Shards before the job: the lock order (module docstring), or this and claim_shard
    # deadlock.
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


def send_held_validation(session: Session, architecture_pk: int) -> bool:
    """A held validation is sent (the caller sends the message); False when it is no longer
    held (another dispatcher sent it, or the architecture was validated meanwhile)."""
    now = utcnow()
    result = session.execute(update(Architecture)
                             .where(Architecture.pk == architecture_pk,
                                    Architecture.status == VALIDATING,
                                    Architecture.validation_sent_at.is_(None))
                             .values(validation_sent_at=now, updated_at=now))
    session.commit()
    return result.rowcount == 1


def hold_validation(session: Session, architecture_pk: int) -> bool:
    """A validation is marked not sent (again: its message could not leave, or it was lost):
    the next `jobs.dispatch.dispatch_validations` sends it; False when it is not validating."""
    result = session.execute(update(Architecture)
                             .where(Architecture.pk == architecture_pk,
                                    Architecture.status == VALIDATING)
                             .values(validation_sent_at=None, updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def delete_architecture(session: Session, architecture_pk: int) -> bool:
    """An architecture is deleted unless its validation was sent and has not finished: that
    validation holds a process of the lane until it ends, and the lane counts its slots by
    such rows (`jobs.dispatch.dispatch_validations`): gone, the slot would look free while the
    sandbox still runs, and the owner could send one upload after another past every other
    user's (upload, delete, upload...). False when it is so (or already gone). Not committed:
    the caller commits with what it did beside (`store.blobs.touch_blobs`)."""
    result = session.execute(delete(Architecture)
                             .where(Architecture.pk == architecture_pk,
                                    or_(Architecture.status != VALIDATING,
                                        Architecture.validation_sent_at.is_(None)))
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


def finish_validation(session: Session, architecture_id: str, status: str,
                      info: dict[str, Any] | None, reason: str | None) -> bool:
    """A validating architecture ends ready (with its `info`) or rejected (with `reason`);
    False when it was not validating any more (validated by a duplicate message)."""
    result = session.execute(update(Architecture)
                             .where(Architecture.id == architecture_id,
                                    Architecture.status == VALIDATING)
                             .values(status=status, info=info, reason=reason,
                                     format=(info or {}).get("format"), updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def start_catalog_round(session: Session, entry_id: int, rounds_seen: int) -> bool:
    """An entry whose `rounds` counter is still `rounds_seen` starts its next round (building,
    the counter one up); False when another process advanced it first."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id,
                                    CatalogEntry.rounds == rounds_seen)
                             .values(rounds=rounds_seen + 1, status=CATALOG_BUILDING,
                                     error=None, updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def attach_catalog_round(session: Session, entry_id: int, rounds: int, job_pk: int) -> bool:
    """The job of round `rounds` becomes the entry's current one; False when the entry is on
    another round (advanced or restarted meanwhile). Not committed: the caller commits it in
    one transaction with the job, or rolls back on False."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id, CatalogEntry.rounds == rounds)
                             .values(job_pk=job_pk, updated_at=utcnow()))
    return result.rowcount == 1


def finish_catalog_entry(session: Session, entry_id: int, job_pk: int, *,
                         networks: int | None, stability: float | None, stopped_early: bool,
                         sha256: str | None, built_at: datetime) -> bool:
    """The entry whose current round is the job `job_pk` is ready with that round's result;
    False when its current round is another."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id, CatalogEntry.job_pk == job_pk)
                             .values(status=CATALOG_READY, networks=networks,
                                     stability=stability, stopped_early=stopped_early,
                                     sha256=sha256, built_at=built_at, error=None,
                                     updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def fail_catalog_entry(session: Session, entry_id: int, job_pk: int, error: str) -> bool:
    """The entry whose current round, the job `job_pk`, failed or was cancelled fails with
    `error`; False when it had failed already or its current round is another."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id, CatalogEntry.job_pk == job_pk,
                                    CatalogEntry.status != CATALOG_FAILED)
                             .values(status=CATALOG_FAILED, error=error, updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def restart_catalog_entry(session: Session, entry_id: int, spec: dict[str, Any],
                          settings: Settings) -> bool:
    """A ready entry (shipped or built) becomes a new build from scratch of `spec` with the
    current settings, its result and files dropped; False when it is not ready."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id,
                                    CatalogEntry.status == CATALOG_READY)
                             .values(status=CATALOG_BUILDING, origin=ORIGIN_BUILT, files=None,
                                     provenance=None, spec=spec,
                                     target_stability=settings.catalog_target_stability,
                                     stability_k=settings.catalog_stability_k,
                                     round_networks=settings.catalog_round_networks,
                                     shard_networks=settings.catalog_shard_networks,
                                     job_pk=None, rounds=0, networks=None, stability=None,
                                     stopped_early=None, sha256=None, built_at=None,
                                     error=None, updated_at=utcnow()))
    session.commit()
    return result.rowcount == 1


def update_shipped_entry(session: Session, entry_id: int, values: dict[str, Any]) -> bool:
    """A shipped entry takes a newer shipped entry's `values` (jobs/shipped.py); False when it
    is no longer shipped (a `--replace` rebuild took it since it was read: never overwritten)."""
    result = session.execute(update(CatalogEntry)
                             .where(CatalogEntry.id == entry_id,
                                    CatalogEntry.origin == ORIGIN_SHIPPED)
                             .values(**values))
    session.commit()
    return result.rowcount == 1
