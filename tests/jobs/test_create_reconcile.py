"""Job creation (jobs/create.py) and reconciliation (worker/reconcile.py, torch-free) on SQLite
and the embedded filesystem broker: the rows are the truth, messages are sent after the commit
and sent again when lost."""

from __future__ import annotations

import json
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session

from jobs import state
from jobs.create import create_job
from store.blobs import record_blob
from store.models import QUEUED, SEQUENTIAL, SHARDED, SUCCEEDED, ApiKey, Job, utcnow
from store.settings import Settings
from tests.embedded import sent_messages
from worker.reconcile import reconcile_once


def _task_ids(settings: Settings) -> list[str]:
    return [json.loads(p.read_text())["headers"]["id"] for p in sent_messages(settings)]


def _task_names(settings: Settings) -> list[str]:
    return [json.loads(p.read_text())["headers"]["task"] for p in sent_messages(settings)]


def test_create_writes_rows_then_sends_one_message_per_shard(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="probe",
                     mode=SHARDED, spec={"x": 1}, estimate={"directions": 5},
                     ranges=[(0, 2), (2, 5)], settings=settings)
    row = session.get(Job, job.pk)
    assert (row.kind, row.status, row.user_id, row.estimate) == ("probe", QUEUED,
                                                                 alice.user_id, {"directions": 5})
    assert [(s.index, s.start, s.stop, s.status) for s in row.shards] == [
        (0, 0, 2, QUEUED), (1, 2, 5, QUEUED)]
    assert sorted(_task_ids(settings)) == sorted(s.task_id for s in row.shards)
    assert _task_names(settings) == ["nads.run_shard"] * 2


def test_a_sequential_job_is_one_run_whole_message(session: Session, app: Celery,
                                                   alice: ApiKey, settings: Settings) -> None:
    create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
               mode=SEQUENTIAL, spec={}, estimate=None, ranges=[(0, 100)], settings=settings)
    assert _task_names(settings) == ["nads.run_whole"]


def test_reconcile_sends_lost_shards_again_and_the_missing_merge(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                     mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1), (1, 2)],
                     settings=settings)
    assert reconcile_once(session, app, settings) == 0  # fresh rows: nothing is lost
    lost = job.shards[1]
    old_task = lost.task_id
    lost.updated_at = utcnow() - timedelta(seconds=settings.stale_after_s + 1)
    session.commit()
    assert reconcile_once(session, app, settings) == 1
    session.refresh(lost)
    assert lost.status == QUEUED and lost.task_id != old_task
    assert lost.task_id in _task_ids(settings)

    # Every shard succeeded but the merge message never left: the reconciler sends it.
    record_blob(session, "c" * 64, 1)
    session.commit()
    for shard in job.shards:
        assert state.claim_shard(session, job, shard, shard.task_id, settings)
        state.finish_shard(session, shard.id, SUCCEEDED, partial_sha256="c" * 64)
    assert reconcile_once(session, app, settings) == 1
    session.refresh(job)
    assert job.merge_status == QUEUED
    assert _task_names(settings).count("nads.merge") == 1


def test_reconcile_fails_a_shard_that_used_up_its_attempts(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                     mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1)],
                     settings=settings)
    shard = job.shards[0]
    shard.attempts = settings.max_attempts
    shard.updated_at = utcnow() - timedelta(seconds=settings.stale_after_s + 1)
    session.commit()
    reconcile_once(session, app, settings)
    session.refresh(job)
    assert job.status == "failed" and "gave up after" in job.error
    lost = job.shards[0]  # lost before it ran: it fails with its job, not queued forever
    session.refresh(lost)
    assert lost.status == "failed" and "gave up after" in lost.error
    # one that was running when it went silent fails with its job
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                     mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1)],
                     settings=settings)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, shard.task_id, settings)
    shard.attempts = settings.max_attempts
    shard.heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 1)
    session.commit()
    reconcile_once(session, app, settings)
    session.refresh(job)
    session.refresh(shard)
    assert job.status == "failed" and shard.status == "failed"
    assert shard.error == job.error and "gave up after" in shard.error
