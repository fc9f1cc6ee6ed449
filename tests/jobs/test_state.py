"""State transitions (jobs/state.py) on SQLite: every move is conditional, so duplicate, late and
racing messages cannot move a row backwards."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session

from jobs import state
from jobs.create import create_job
from store.blobs import record_blob
from store.models import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SHARDED,
    SUCCEEDED,
    ApiKey,
    Job,
    utcnow,
)
from store.settings import Settings


def _job(session: Session, app: Celery, key: ApiKey, shards: int = 2) -> Job:
    ranges = [(i * 10, (i + 1) * 10) for i in range(shards)]
    return create_job(session, app, user_id=key.user_id, api_key_id=key.id, kind="nads",
                      mode=SHARDED, spec={"architecture": "lenet"}, estimate=None,
                      ranges=ranges, settings=Settings(dispatch_slots=8))


def test_claim_moves_shard_and_job_to_running(session: Session, app: Celery, alice: ApiKey,
                                               settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, "task-1", settings, worker="w1")
    session.refresh(job)
    assert (job.status, shard.status, shard.attempts, shard.worker) == (RUNNING, RUNNING, 1, "w1")
    assert job.started_at is not None and shard.heartbeat_at is not None


def test_a_running_shard_is_not_taken_by_another_task_while_it_beats(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, "task-1", settings)
    assert not state.claim_shard(session, job, shard, "task-2", settings)
    assert state.claim_shard(session, job, shard, "task-1", settings)  # its own redelivery
    assert shard.attempts == 2


def test_a_shard_whose_heartbeat_stopped_is_taken_over(session: Session, app: Celery,
                                                       alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, "task-1", settings)
    shard.heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 1)
    session.commit()
    assert state.claim_shard(session, job, shard, "task-2", settings)
    assert shard.task_id == "task-2"


def test_merge_is_claimed_exactly_once_when_every_shard_succeeded(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    first, second = job.shards
    for shard in job.shards:
        assert state.claim_shard(session, job, shard, f"t{shard.index}", settings)
    for sha in ("a" * 64, "b" * 64):  # the partials' blob rows (the worker records them first)
        record_blob(session, sha, 1)
    session.commit()
    state.finish_shard(session, first.id, SUCCEEDED, partial_sha256="a" * 64)
    assert not state.claim_merge(session, job.pk)  # one shard still running
    state.finish_shard(session, second.id, SUCCEEDED, partial_sha256="b" * 64)
    assert state.claim_merge(session, job.pk)
    assert not state.claim_merge(session, job.pk)  # a duplicate message
    session.refresh(job)
    assert job.merge_status == QUEUED


def test_cancel_stops_queued_shards_and_later_claims(session: Session, app: Celery,
                                                     alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    assert state.cancel_job(session, job)
    assert job.status == CANCELLED and all(s.status == CANCELLED for s in job.shards)
    assert state.is_stopped(session, job.pk)
    assert not state.claim_shard(session, job, job.shards[0], "late", settings)
    assert not state.cancel_job(session, job)  # already finished: the API answers 409


def test_fail_never_overwrites_a_finished_job(session: Session, app: Celery,
                                              alice: ApiKey) -> None:
    job = _job(session, app, alice)
    assert state.cancel_job(session, job)
    state.fail_job(session, job.pk, "too late")
    session.refresh(job)
    assert (job.status, job.error) == (CANCELLED, None)
    other = _job(session, app, alice)
    state.fail_job(session, other.pk, "x" * 5000)
    session.refresh(other)
    assert other.status == FAILED and len(other.error) == 4000


def test_progress_is_recorded_only_for_a_running_shard(session: Session, app: Celery,
                                                       alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    queued = job.shards[1]
    state.record_progress(session, queued.id, 0.5)
    session.refresh(queued)
    assert queued.fraction == 0.0
    assert state.claim_shard(session, job, queued, "t", settings)
    state.record_progress(session, queued.id, 0.5)
    session.refresh(queued)
    assert queued.fraction == 0.5
