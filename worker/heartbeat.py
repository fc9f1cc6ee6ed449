"""Heartbeats in the database, so that a dead worker's work moves on within a minute.

Two kinds, each a thread writing every `NADS_HEARTBEAT_INTERVAL_S` (5 s):
- the worker's: its row in `workers` (started when Celery says the worker is ready, in the
  worker's main process), with the named datasets it can read, checked again at every beat (an
  operator may install CIFAR-10 while it runs);
- the running shard's: `shards.heartbeat_at`, from the process that computes it, for as long as
  it computes, whatever its progress reports (a long forward pass reports none).

The reconciler (worker/reconcile.py) sends again a running shard whose heartbeat is older than
`NADS_HEARTBEAT_TIMEOUT_S` (30 s), and a starting worker at once takes back the shards that its
previous run (same node name) left running (`reclaim_own`). Both go through the shard's
conditional transitions (jobs/state.py), so a late duplicate of a shard does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jobs import state
from store.db import session_scope
from store.models import QUEUED, RUNNING, Job, Shard, Worker, utcnow
from store.settings import Settings

log = logging.getLogger(__name__)


class _Beat(threading.Thread):
    """Calls `beat()` every `interval` seconds until stopped; a failed beat is logged and the
    next one tried (the database may be briefly away)."""

    def __init__(self, interval: float, beat: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.beat = beat
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.beat()
            except Exception:  # noqa: BLE001
                log.warning("heartbeat %s failed", self.name, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.interval + 5)


def beat_worker(session: Session, name: str, info: dict[str, Any] | None = None) -> None:
    """Upserts the worker's row with last_seen = now (and no `stopped_at`: a restart under the
    same name is connected again); `info` (processes, queues, gpus: at its start) is written
    too."""
    now = utcnow()
    info = info or {}
    result = session.execute(update(Worker).where(Worker.name == name)
                             .values(last_seen=now, stopped_at=None, **info))
    if result.rowcount == 0:
        session.add(Worker(name=name, hostname=socket.gethostname(), pid=os.getpid(),
                           started_at=now, last_seen=now, **info))
        try:
            session.commit()
        except IntegrityError:  # another process of the same node inserted it first
            session.rollback()
        return
    session.commit()


@contextlib.contextmanager
def shard_heartbeat(settings: Settings, shard_id: int, task_id: str | None) -> Iterator[None]:
    """Keeps the shard's heartbeat fresh while the body runs."""
    url = settings.resolved_database_url

    def beat() -> None:
        with session_scope(url) as session:
            state.beat_shard(session, shard_id, task_id)

    thread = _Beat(settings.heartbeat_interval_s, beat, f"shard-{shard_id}")
    thread.start()
    try:
        yield
    finally:
        thread.stop()


def leave_worker(session: Session, name: str) -> None:
    """Records that the worker shut down: it is not connected from now on (jobs/fleet.py), so
    its processes are no longer slots that users' shards are sent to."""
    session.execute(update(Worker).where(Worker.name == name).values(stopped_at=utcnow()))
    session.commit()


class _WorkerBeat(_Beat):
    """The worker's heartbeat: stopping it (at the worker's clean shutdown) also records that
    the worker left (`leave_worker`), after the last beat."""

    def __init__(self, interval: float, beat: Callable[[], None], name: str,
                 leave: Callable[[], None]) -> None:
        super().__init__(interval, beat, name)
        self.leave = leave

    def stop(self) -> None:
        super().stop()
        try:
            self.leave()
        except Exception:  # noqa: BLE001 (the row times out after heartbeat_timeout_s anyway)
            log.warning("could not record that %s left", self.name, exc_info=True)


def start_worker_heartbeat(settings: Settings, name: str,
                           info: dict[str, Any] | None = None) -> _Beat:
    """Registers the worker (with `info`: processes, queues, gpus) and beats every interval,
    each beat with the datasets it can read; its `stop()` records that the worker left."""
    from nadcore.poison.datasets import readable_datasets

    url = settings.resolved_database_url

    def datasets() -> dict[str, Any]:
        return {"datasets": readable_datasets(settings.resolved_datasets_dir)}

    def beat() -> None:
        with session_scope(url) as session:
            beat_worker(session, name, datasets())

    def leave() -> None:
        with session_scope(url) as session:
            leave_worker(session, name)

    with session_scope(url) as session:
        beat_worker(session, name, (info or {}) | datasets())
    thread = _WorkerBeat(settings.heartbeat_interval_s, beat, f"worker-{name}", leave)
    thread.start()
    return thread


def reclaim_own(session: Session, app: Celery, name: str) -> int:
    """At a worker's start: the shards its previous run (same node name) left queued-as-taken
    or running are sent again now, without waiting for their heartbeat to time out (nothing of
    this worker runs yet). Returns how many were sent."""
    from jobs.dispatch import send_shard

    shards = session.scalars(select(Shard).where(Shard.worker == name,
                                                 Shard.status == RUNNING)).all()
    sent = 0
    for shard in shards:
        job = session.scalar(select(Job).where(Job.pk == shard.job_pk))
        if job is None or job.status not in (QUEUED, RUNNING):
            continue
        log.warning("job %s shard %d: left running by this worker's previous run; sending it "
                    "again", job.id, shard.index)
        task_id = state.resend_shard(session, shard.id, RUNNING, shard.task_id)
        if task_id is None:  # finished or taken over meanwhile
            continue
        send_shard(app, session, job, shard.index, task_id)
        sent += 1
    return sent
