"""Where each unfinished job of a user stands in the queue, and when it should start and end
(torch-free: the API answers it in a job's status).

The users' shards are played forward on the processes connected now (jobs/fleet.py), as the
service runs them: the shards running keep their process for what is left of them (their
cost at the process's rate, less their progress); the shards sent to the broker and not yet
taken go next, in the order they were sent (its queues are first in, first out); then each
process that frees takes the held shard `jobs.dispatch.next_user` picks, the rule the
dispatcher sends by (the fewest in flight, then the user served longest ago, then the oldest
job), that user's oldest job's lowest shard. A shard lasts its share of its job's work
(`compute_work`: FLOPs at the process's rate for the kind, measured or assumed, or what
validation timed) on the process that takes it.

Of each job this gives `position` (1 for the next job to start of those that wait; 0 once one
of its shards runs or is sent), `shards_ahead` (other jobs' shards running now or starting
before its first waiting one), `wait_s` (until its first shard starts) and `done_s` (until
its last ends). A cost unknown before a shard runs makes the times it decides unknown (None),
as does a fleet with no process. Not counted: the catalog's own queue beyond the shards it
runs now, preemption (jobs/dispatch.py), a job's fixed costs and merge, and workers that
connect later.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from jobs.dispatch import next_user
from jobs.fleet import (
    compute_work,
    estimating_workers,
    rate_key,
    takes_user_shards,
    user_processes,
)
from store.auth import CATALOG_USER
from store.models import QUEUED, RUNNING, Job, Shard, User, Worker, utcnow
from store.settings import Settings

UNKNOWN = math.inf  # a time that depends on a cost not known before it runs


@dataclass(frozen=True)
class QueueSpot:
    """Where a job stands: see the module's docstring. Times are seconds from now."""

    position: int
    shards_ahead: int
    wait_s: float | None
    done_s: float | None


@dataclass
class _Play:
    """A job played forward: its seconds per position on each process (None: unknown cost),
    and what the play gave it so far."""

    job: Job
    per_position: list[float] | None
    first_start: float = UNKNOWN
    last_end: float = 0.0
    ahead: int | None = None  # shards started before its first waiting one
    own: int = 0  # of its shards, those started so far
    started: bool = False  # a shard of it runs or was sent before the play

    def seconds(self, shard: Shard, slot: int) -> float:
        if self.per_position is None:
            return UNKNOWN
        return self.per_position[slot] * (shard.stop - shard.start)


def _per_position(job: Job, workers: Sequence[Worker]) -> list[float] | None:
    """Seconds of one of the job's positions on each process (None: unknown cost)."""
    processes = user_processes(workers, rate_key(job.kind, job.spec))
    ranges = [(s.start, s.stop) for s in job.shards]
    work = compute_work(job.estimate, processes, ranges)
    if work is None:
        return None
    amount, rates, _ = work
    positions = sum(b - a for a, b in ranges) or 1
    return [amount / positions / rate for rate in rates]


def simulate(jobs: Sequence[Job], workers: Sequence[Worker], catalog_user: int | None,
             now: datetime | None = None) -> dict[int, QueueSpot]:
    """The `QueueSpot` of each users' job (by pk) among the unfinished `jobs` (queued or
    running, shards loaded) on the connected `workers`; the jobs of `catalog_user` only hold
    the processes their running shards are on."""
    now = now or utcnow()
    slot_worker = [w.name for w in workers if takes_user_shards(w)
                   for _ in range(max(1, w.processes))]
    if not slot_worker:
        return {j.pk: QueueSpot(0, 0, None, None) for j in jobs if j.user_id != catalog_user}
    free_at = [0.0] * len(slot_worker)
    taken = [False] * len(slot_worker)
    plays = {j.pk: _Play(j, _per_position(j, workers)) for j in jobs}
    flight: dict[int, int] = {}
    ending: list[tuple[float, int]] = []  # (end, user) of the users' shards in flight
    last: dict[int, float] = {}  # when each user's last shard started, seconds from now
    started = 0  # shards running or started so far

    def occupy(play: _Play, slot: int, start: float, end: float) -> None:
        nonlocal started
        free_at[slot], taken[slot] = end, True
        play.first_start = min(play.first_start, start)
        play.last_end = max(play.last_end, end)
        play.own += 1
        started += 1
        user = play.job.user_id
        if user != catalog_user:
            flight[user] = flight.get(user, 0) + 1
            heapq.heappush(ending, (end, user))
            last[user] = max(last.get(user, -math.inf), start)

    requeued = []  # running on a worker gone: it runs again from the queue
    for play in plays.values():  # running shards keep their process for what is left
        for shard in play.job.shards:
            if shard.status != RUNNING:
                continue
            slot = next((i for i, name in enumerate(slot_worker)
                         if name == shard.worker and not taken[i]), None)
            if slot is None:
                requeued.append((play, shard))
                continue
            ran = (now - shard.started_at).total_seconds() if shard.started_at else 0.0
            left = play.seconds(shard, slot) * (1.0 - min(max(shard.fraction, 0.0), 1.0))
            play.started = True
            occupy(play, slot, -max(ran, 0.0), left)
    users = [p for p in plays.values() if p.job.user_id != catalog_user]
    queued = [(p, s) for p in users for s in p.job.shards if s.status == QUEUED]
    sent = sorted(((p, s) for p, s in queued if s.task_id is not None),
                  key=lambda ps: (ps[1].updated_at or now, ps[1].id or 0))
    held = sorted([(p, s) for p, s in queued if s.task_id is None]
                  + [(p, s) for p, s in requeued if p.job.user_id != catalog_user],
                  key=lambda ps: (ps[0].job.pk, ps[1].index))
    for play in users:
        play.started = play.started or play.job.started_at is not None
    for play, _ in sent:
        play.started = True
    while sent or held:  # sent shards first (first in, first out), then the held ones
        slot = min(range(len(free_at)), key=free_at.__getitem__)
        at = free_at[slot]
        while ending and ending[0][0] <= at:
            flight[heapq.heappop(ending)[1]] -= 1
        if sent:
            play, shard = sent.pop(0)
        else:
            first_job: dict[int, int] = {}
            for p, _ in held:
                first_job.setdefault(p.job.user_id, p.job.pk)
            user = next_user(first_job, flight, last)
            play, shard = next((p, s) for p, s in held if p.job.user_id == user)
            held.remove((play, shard))
        if play.ahead is None:
            play.ahead = started - play.own
        occupy(play, slot, at, at + play.seconds(shard, slot))
    waiting = sorted((p for p in users if not p.started),
                     key=lambda p: (p.first_start, p.ahead or 0, p.job.pk))
    rank = {p.job.pk: i + 1 for i, p in enumerate(waiting)}

    def known(seconds: float) -> float | None:
        return None if math.isinf(seconds) else round(max(seconds, 0.0), 1)

    return {p.job.pk: QueueSpot(position=rank.get(p.job.pk, 0), shards_ahead=p.ahead or 0,
                                wait_s=0.0 if p.started else known(p.first_start),
                                done_s=known(p.last_end))
            for p in users}


def queue_spots(session: Session, settings: Settings) -> dict[int, QueueSpot]:
    """`simulate` on the database's unfinished jobs and connected (else expected) workers."""
    jobs = session.scalars(select(Job).where(Job.status.in_((QUEUED, RUNNING)))
                           .options(selectinload(Job.shards)).order_by(Job.pk)).all()
    catalog_user = session.scalar(select(User.id).where(User.name == CATALOG_USER))
    return simulate(jobs, estimating_workers(session, settings), catalog_user)
