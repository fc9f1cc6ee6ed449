"""The reconciler (worker/reconcile.py) and a starting worker's reclaim (worker/heartbeat.py
`reclaim_own`) on SQLite and the embedded broker: a running shard is judged by its heartbeat,
not by `updated_at` (which a progress report or a send moves). A stale heartbeat gets the shard
sent again even when its `updated_at` is fresh; a fresh heartbeat keeps it running even when
its `updated_at` is old (a long forward pass reports no progress); a worker restarted under the
same node name takes back its previous run's shards at once, and no other node's."""

from __future__ import annotations

import json
from datetime import timedelta

from celery import Celery
from sqlalchemy import update
from sqlalchemy.orm import Session

from jobs import state
from jobs.create import create_job
from store.models import QUEUED, RUNNING, SHARDED, ApiKey, Job, Shard, utcnow
from store.settings import Settings
from tests.embedded import sent_messages
from worker.heartbeat import reclaim_own
from worker.reconcile import reconcile_once


def _running_shard(session: Session, app: Celery, alice: ApiKey, settings: Settings,
                   worker: str = "w1") -> tuple[Job, Shard]:
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                     mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1)], settings=settings)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, shard.task_id, settings, worker=worker)
    return job, shard


def _set(session: Session, shard: Shard, *, heartbeat_age_s: float, updated_age_s: float
         ) -> None:
    now = utcnow()
    session.execute(update(Shard).where(Shard.id == shard.id).values(
        heartbeat_at=now - timedelta(seconds=heartbeat_age_s),
        updated_at=now - timedelta(seconds=updated_age_s)))
    session.commit()
    session.refresh(shard)


def _sent_task_ids(settings: Settings) -> set[str]:
    return {json.loads(p.read_text())["headers"]["id"] for p in sent_messages(settings)}


def test_a_stale_heartbeat_is_sent_again_even_with_a_fresh_updated_at(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    _, shard = _running_shard(session, app, alice, settings)
    old_task = shard.task_id
    _set(session, shard, heartbeat_age_s=settings.heartbeat_timeout_s + 1, updated_age_s=0)
    assert reconcile_once(session, app, settings) == 1
    session.refresh(shard)
    assert shard.status == QUEUED and shard.task_id != old_task
    assert shard.task_id in _sent_task_ids(settings)


def test_a_fresh_heartbeat_is_left_running_even_with_an_old_updated_at(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    _, shard = _running_shard(session, app, alice, settings)
    task = shard.task_id
    sent = _sent_task_ids(settings)
    _set(session, shard, heartbeat_age_s=0, updated_age_s=settings.stale_after_s + 1)
    assert reconcile_once(session, app, settings) == 0
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (RUNNING, task)
    assert _sent_task_ids(settings) == sent


def test_a_restarted_worker_takes_back_its_own_running_shards_only(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    _, mine = _running_shard(session, app, alice, settings, worker="node-a")
    _, other = _running_shard(session, app, alice, settings, worker="node-b")
    # both heartbeats fresh: the reconciler would wait; the restarted node-a does not
    _set(session, mine, heartbeat_age_s=0, updated_age_s=0)
    _set(session, other, heartbeat_age_s=0, updated_age_s=0)
    mine_task, other_task = mine.task_id, other.task_id
    assert reclaim_own(session, app, "node-a") == 1
    session.refresh(mine)
    session.refresh(other)
    assert mine.status == QUEUED and mine.task_id != mine_task
    assert mine.task_id in _sent_task_ids(settings)
    assert (other.status, other.task_id) == (RUNNING, other_task)
