"""Which broker queue a shard's message goes to (jobs/dispatch.py, jobs/catalog.py), read from
the embedded broker's messages: the catalog's shards go to the `catalog` queue, which workers
take after users' work (a worker of one process on 2 cores takes only it), and users' shards
never do; a shard sent again by the reconciler keeps its queue. Were the catalog's shards in the
users' queue, a catalog build would sit in front of every user's job."""

from __future__ import annotations

import json
from datetime import timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs.broker import CATALOG_QUEUE, GPU_QUEUE
from jobs.catalog import build
from jobs.create import create_job
from store.auth import CATALOG_USER
from store.models import SHARDED, ApiKey, Job, Shard, User, utcnow
from store.settings import Settings
from tests.embedded import sent_messages
from worker.reconcile import reconcile_once


def _queue_of_task(settings: Settings) -> dict[str, str]:
    """task id -> the queue its message was routed to."""
    queues = {}
    for path in sent_messages(settings):
        message = json.loads(path.read_text())
        queues[message["headers"]["id"]] = message["properties"]["delivery_info"]["routing_key"]
    return queues


def _catalog_job(session: Session) -> Job:
    return session.scalar(select(Job).join(User, Job.user_id == User.id)
                          .where(User.name == CATALOG_USER))


def test_catalog_shards_go_to_the_catalog_queue_and_users_shards_do_not(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    assert build(session, app, settings, ["logreg"]) == {"logreg": "submitted round 1"}
    catalog = _catalog_job(session)
    users = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                       mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1), (1, 2)],
                       settings=settings)
    queues = _queue_of_task(settings)
    assert catalog is not None and len(catalog.shards) >= 2
    assert {queues[s.task_id] for s in catalog.shards} == {CATALOG_QUEUE}
    assert {queues[s.task_id] for s in users.shards} == {GPU_QUEUE}


def test_a_lost_shard_sent_again_keeps_its_queue(session: Session, app: Celery, alice: ApiKey,
                                                 settings: Settings) -> None:
    build(session, app, settings, ["logreg"])
    catalog = _catalog_job(session)
    users = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                       mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1)], settings=settings)
    lost = [catalog.shards[0], users.shards[0]]
    before = {s.id: s.task_id for s in lost}
    stale = utcnow() - timedelta(seconds=settings.stale_after_s + 1)
    session.execute(update(Shard).where(Shard.id.in_(before)).values(updated_at=stale))
    session.commit()
    assert reconcile_once(session, app, settings) == 2
    queues = _queue_of_task(settings)
    for shard in lost:
        session.refresh(shard)
        assert shard.task_id != before[shard.id]
    assert queues[catalog.shards[0].task_id] == CATALOG_QUEUE
    assert queues[users.shards[0].task_id] == GPU_QUEUE
