"""The reconciler: the job rows say what should be running; send again what was lost.

Runs periodically (celery beat, every `reconcile_interval_s`). A running shard whose heartbeat
(worker/heartbeat.py) is older than `heartbeat_timeout_s` (its process died), and a sent one
untouched for `stale_after_s` (its message was lost), get a new message, and held shards are
sent to the slots that freed up (jobs/dispatch.py); a shard already run
`max_attempts` times fails its job instead. A job whose shards are
all done but whose merge never happened gets its merge. An uploaded architecture whose
validation was sent and not finished within two validation timeouts and a minute gets it sent
again (the task is idempotent), and held validations are sent to the validation lane's free
slots.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs import state
from jobs.dispatch import (
    dispatch_pending,
    dispatch_validations,
    enqueue_merge,
    is_held,
    send_shard,
    validation_lost_after_s,
)
from store.models import (
    QUEUED,
    RUNNING,
    SEQUENTIAL,
    SUCCEEDED,
    VALIDATING,
    Architecture,
    Job,
    Shard,
    utcnow,
)
from store.settings import Settings

log = logging.getLogger(__name__)


def reconcile_once(session: Session, app: Celery, settings: Settings) -> int:
    """One pass over the unfinished jobs; returns the number of messages sent."""
    stale = utcnow() - timedelta(seconds=settings.stale_after_s)
    sent = 0
    jobs = session.scalars(select(Job).where(Job.status.in_((QUEUED, RUNNING)))).all()
    for job in jobs:
        sent += _reconcile_job(session, app, settings, job, stale)
    sent += dispatch_pending(app, session, settings)  # slots freed without a shard finishing
    return sent + _reconcile_validations(session, app, settings)


def is_lost(shard: Shard, settings: Settings, stale: datetime) -> bool:
    """True when nothing will finish the shard unless it is sent again (a shard held for a
    free slot, never sent, is not lost: `dispatch_pending` sends it)."""
    if is_held(shard):
        return False
    if shard.status == RUNNING and shard.heartbeat_at is not None:
        dead = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
        return shard.heartbeat_at <= dead
    return shard.status in (QUEUED, RUNNING) and shard.updated_at <= stale


def _reconcile_validations(session: Session, app: Celery, settings: Settings) -> int:
    """Validations sent `validation_lost_after_s` ago and not finished are held again (their
    message was lost, or their worker died), then held validations are sent to the lane's
    free slots (`dispatch_validations`); a validation held for a slot is not lost."""
    lost_since = utcnow() - timedelta(seconds=validation_lost_after_s(settings))
    lost = session.execute(select(Architecture.pk, Architecture.id).where(
        Architecture.status == VALIDATING, Architecture.validation_sent_at.is_not(None),
        Architecture.updated_at <= lost_since)).all()
    for pk, architecture_id in lost:
        if state.hold_validation(session, pk):
            log.warning("architecture %s: still validating, sending its validation again",
                        architecture_id)
    return dispatch_validations(app, session, settings)


def _reconcile_job(session: Session, app: Celery, settings: Settings, job: Job,
                   stale: datetime) -> int:
    sent = 0
    for shard in job.shards:
        if not is_lost(shard, settings, stale):
            continue
        if shard.attempts >= settings.max_attempts:
            state.fail_shard_and_job(session, job.pk, shard.id,
                                     f"shard {shard.index}: gave up after {shard.attempts} "
                                     f"attempts (limit {settings.max_attempts})")
            return sent
        log.warning("job %s shard %d: %s and silent since %s, sending it again",
                    job.id, shard.index, shard.status, shard.heartbeat_at or shard.updated_at)
        task_id = state.resend_shard(session, shard.id, shard.status, shard.task_id)
        if task_id is None:  # claimed, finished or sent by another process meanwhile
            continue
        send_shard(app, session, job, shard.index, task_id)
        sent += 1
    if job.mode == SEQUENTIAL or any(s.status != SUCCEEDED for s in job.shards):
        return sent
    if job.merge_status is None and state.claim_merge(session, job.pk):
        sent += enqueue_merge(app, job.id)
    elif job.merge_status in (QUEUED, RUNNING) and job.updated_at <= stale:
        log.warning("job %s: merge silent since %s, sending it again", job.id, job.updated_at)
        if state.resend_merge(session, job.pk, stale):
            sent += enqueue_merge(app, job.id)
    return sent
