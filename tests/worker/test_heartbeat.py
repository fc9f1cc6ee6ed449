"""The heartbeat threads (worker/heartbeat.py) on SQLite, at a 50 ms interval: while a shard's
body runs, its thread writes `shards.heartbeat_at` and keeps advancing it, and stops writing when
the body ends; the worker's thread does the same to `workers.last_seen`. (Without the writes a
live shard looks dead to the reconciler after `NADS_HEARTBEAT_TIMEOUT_S` and is computed twice.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from jobs import state
from jobs.create import create_job
from jobs.fleet import connected_workers
from store.models import SHARDED, ApiKey, Shard, Worker, utcnow
from store.settings import Settings
from worker.heartbeat import shard_heartbeat, start_worker_heartbeat

INTERVAL_S = 0.05
LONG_AGO = timedelta(hours=1)


def _beats(read: Callable[[], datetime], old: datetime, count: int = 3,
           timeout: float = 10) -> list[datetime]:
    """The distinct values other than `old` that `read` returns, polled until there are
    `count` of them (or `timeout` passed)."""
    seen: list[datetime] = []
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        value = read()
        if value != old and (not seen or value != seen[-1]):
            seen.append(value)
        time.sleep(INTERVAL_S / 5)
    return seen


def _fresh_and_advancing(seen: list[datetime], old: datetime) -> bool:
    return len(seen) == 3 and seen[0] > old + LONG_AGO / 2 and seen == sorted(set(seen))


def test_a_running_shards_heartbeat_is_written_and_advances_while_it_runs(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = create_job(session, app, user_id=alice.user_id, api_key_id=alice.id, kind="nads",
                     mode=SHARDED, spec={}, estimate=None, ranges=[(0, 1)], settings=settings)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, shard.task_id, settings, worker="w1")
    old = utcnow() - LONG_AGO  # only the thread can make it fresh again
    session.execute(update(Shard).where(Shard.id == shard.id).values(heartbeat_at=old))
    session.commit()

    def heartbeat() -> datetime:
        value = session.scalar(select(Shard.heartbeat_at).where(Shard.id == shard.id))
        session.commit()  # end the read: the next one sees the thread's later writes
        return value

    fast = settings.model_copy(update={"heartbeat_interval_s": INTERVAL_S})
    with shard_heartbeat(fast, shard.id, shard.task_id):
        seen = _beats(heartbeat, old)
    assert _fresh_and_advancing(seen, old), seen  # written three times while it ran
    stopped = heartbeat()
    time.sleep(5 * INTERVAL_S)
    assert heartbeat() == stopped  # the body ended: no more beats


def test_the_workers_heartbeat_is_written_and_advances(session: Session,
                                                       settings: Settings) -> None:
    fast = settings.model_copy(update={"heartbeat_interval_s": INTERVAL_S})
    old = utcnow() - LONG_AGO

    def last_seen() -> datetime:
        value = session.scalar(select(Worker.last_seen).where(Worker.name == "node-1"))
        session.commit()
        return value

    thread = start_worker_heartbeat(fast, "node-1", {"processes": 2, "queues": "gpu,cpu"})
    try:
        assert session.get(Worker, "node-1").processes == 2  # registered at once
        session.commit()
        session.execute(update(Worker).where(Worker.name == "node-1").values(last_seen=old))
        session.commit()
        seen = _beats(last_seen, old)
    finally:
        thread.stop()
    assert _fresh_and_advancing(seen, old), seen
    stopped = last_seen()
    time.sleep(5 * INTERVAL_S)
    assert last_seen() == stopped


def test_a_worker_that_stopped_is_not_connected_until_it_beats_again(
        session: Session, settings: Settings) -> None:
    """Stopping the worker's heartbeat (its clean shutdown) records that it left: its row is
    not connected however recent its last beat; its restart under the same name is again."""
    fast = settings.model_copy(update={"heartbeat_interval_s": INTERVAL_S})

    def connected() -> list[str]:
        names = [w.name for w in connected_workers(session, fast)]
        session.commit()
        return names

    thread = start_worker_heartbeat(fast, "node-2", {"processes": 1, "queues": "gpu"})
    assert "node-2" in connected()
    thread.stop()
    assert "node-2" not in connected()
    row = session.get(Worker, "node-2")
    assert utcnow() - row.last_seen < timedelta(seconds=fast.heartbeat_timeout_s)
    session.commit()
    again = start_worker_heartbeat(fast, "node-2", {"processes": 1, "queues": "gpu"})
    try:
        assert "node-2" in connected()
    finally:
        again.stop()
