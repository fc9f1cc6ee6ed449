"""Enqueueing by task name: used by the API, the reconciler and the tasks themselves."""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from celery import Celery
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from jobs import state
from jobs.broker import (
    CATALOG_QUEUE,
    COUNT_ARCHITECTURE,
    MERGE,
    RUN_SHARD,
    RUN_WHOLE,
    VALIDATE_ARCHITECTURE,
    VALIDATE_QUEUE,
)
from store.auth import CATALOG_USER
from store.models import (
    QUEUED,
    RUNNING,
    SEQUENTIAL,
    VALIDATING,
    Architecture,
    Job,
    Shard,
    User,
    utcnow,
)
from store.settings import Settings

log = logging.getLogger(__name__)


def _send(app: Celery, name: str, args: list, task_id: str, queue: str | None = None) -> bool:
    """Sends one message (to the task's routed queue, or `queue`); False (and a log line) when
    the broker is unreachable.

    A message that could not be sent is not an error for the caller: the row says the work is
    queued, and the reconciler sends it again.
    """
    route = {"queue": queue, "routing_key": queue} if queue else {}
    try:
        app.send_task(name, args=args, task_id=task_id, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0.2}, **route)
        return True
    except Exception:  # noqa: BLE001 (any broker failure is recovered from the row)
        log.exception("could not enqueue %s%s", name, args)
        return False


def send_shard(app: Celery, session: Session, job: Job, index: int, task_id: str) -> bool:
    """Sends the message of shard `index` of `job` under `task_id`, the id its row records
    (catalog shards to the catalog's queue); False when the broker is unreachable."""
    name = RUN_WHOLE if job.mode == SEQUENTIAL else RUN_SHARD
    args = [job.id] if job.mode == SEQUENTIAL else [job.id, index]
    owner = session.scalar(select(User.name).where(User.id == job.user_id))
    return _send(app, name, args, task_id, CATALOG_QUEUE if owner == CATALOG_USER else None)


def enqueue_shard(app: Celery, session: Session, job: Job, shard: Shard) -> bool:
    """Queues the shard, as the caller found it, under a fresh task id (`state.resend_shard`,
    committed), then sends its message; False when the shard had moved on meanwhile (nothing
    sent) or the broker is unreachable."""
    task_id = state.resend_shard(session, shard.id, shard.status, shard.task_id)
    if task_id is None:
        log.info("job %s shard %d: moved on meanwhile; not sent", job.id, shard.index)
        return False
    session.refresh(shard)  # the caller's object says what the row now says
    return send_shard(app, session, job, shard.index, task_id)


def user_slots(session: Session, settings: Settings) -> int:
    """How many shards of users' jobs may be at the broker or running at once:
    `dispatch_slots`, or the connected workers' processes that take users' shards, less those
    busy with a shard `dispatch_pending` does not count: a catalog shard (a worker that takes
    both queues) or the shard of a job cancelled or failed meanwhile that has not stopped yet
    (its heartbeat is fresh); at least one."""
    if settings.dispatch_slots:
        return settings.dispatch_slots
    from jobs.fleet import connected_workers, takes_user_shards

    workers = [w for w in connected_workers(session, settings) if takes_user_shards(w)]
    if not workers:
        return 1
    alive = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s)
    busy = dict(session.execute(
        select(Shard.worker, func.count()).join(Job, Shard.job_pk == Job.pk)
        .join(User, Job.user_id == User.id)
        .where(or_(User.name == CATALOG_USER, Job.status.not_in((QUEUED, RUNNING))),
               Shard.status == RUNNING, Shard.heartbeat_at >= alive,
               Shard.worker.in_([w.name for w in workers]))
        .group_by(Shard.worker)).all())
    return max(1, sum(max(0, w.processes - busy.get(w.name, 0)) for w in workers))


def _users_shards(session: Session) -> list:
    """Every queued or running shard of users' (not the catalog's) unfinished jobs, oldest job
    and lowest index first."""
    return session.execute(
        select(Shard.id, Shard.index, Shard.task_id, Shard.status, Shard.started_at, Job.pk,
               Job.user_id)
        .join(Job, Shard.job_pk == Job.pk).join(User, Job.user_id == User.id)
        .where(Job.status.in_((QUEUED, RUNNING)), User.name != CATALOG_USER,
               Shard.status.in_((QUEUED, RUNNING)))
        .order_by(Job.pk, Shard.index)).all()


def _in_flight(rows: list) -> dict[int, int]:
    """Shards sent or running, by user."""
    flight: dict[int, int] = {}
    for r in rows:
        if r.task_id is not None or r.status == RUNNING:
            flight[r.user_id] = flight.get(r.user_id, 0) + 1
    return flight


def fair_share(slots: int, users: int) -> int:
    """The slots one user may hold while others wait: an equal part, rounded up (the slots
    that do not divide evenly are used, not left idle)."""
    return max(1, -(-slots // max(1, users)))


def preempt_over_share(session: Session, settings: Settings, slots: int) -> int:
    """Takes slots back for users who wait below their fair share; returns how many.

    While a user has held shards and fewer than `fair_share` in flight, and no free slot is
    left for them, the running shard of the user furthest over their share that started most
    recently (the least work lost) is preempted (`jobs.state.preempt_shard`): held again, to
    run later from its start, its task stopping at its next check (within the progress
    interval). Only shards that have run `preempt_after_s` are taken (0: never), so a slot is
    not passed back and forth faster than work gets done.

    Why preempt, not only cap: `dispatch_pending` gives each free slot to the user with the
    fewest in flight, so no user is sent past their share while others wait; but a user alone
    takes every slot, and another user who comes then waits for a shard of the first to end,
    up to its budget (an hour's shard, or an uploaded model's: jobs/budget.py). Capping a lone
    user below the slots instead would leave slots idle while nobody else wants them.
    Preempting costs the stopped shard's work so far (shards do not checkpoint), at most once
    per `preempt_after_s` per slot.
    """
    if not settings.preempt_after_s:
        return 0
    rows = _users_shards(session)
    flight = _in_flight(rows)
    waiting = {r.user_id for r in rows if r.status == QUEUED and r.task_id is None}
    share = fair_share(slots, len(waiting | set(flight)))
    short = sum(max(0, share - flight.get(u, 0)) for u in waiting)
    free = max(0, slots - sum(flight.values()))
    needed = short - free
    if needed <= 0:
        return 0
    started_before = utcnow() - timedelta(seconds=settings.preempt_after_s)
    candidates = sorted((r for r in rows if r.status == RUNNING and r.started_at is not None
                         and r.started_at <= started_before),
                        key=lambda r: r.started_at, reverse=True)
    taken = 0
    while taken < needed:
        over = {u: n for u, n in flight.items() if n > share}
        victim = next((r for r in sorted(candidates, key=lambda r: -over.get(r.user_id, 0))
                       if r.user_id in over), None)
        if victim is None:
            break
        candidates.remove(victim)
        if state.preempt_shard(session, victim.id, victim.task_id):
            log.warning("preempted shard %d (user %d, %d in flight over a share of %d) for "
                        "a user waiting", victim.id, victim.user_id, flight[victim.user_id],
                        share)
            flight[victim.user_id] -= 1
            taken += 1
    return taken


def next_user(first_job: Mapping[int, int], flight: Mapping[int, int],
              last: Mapping[int, Any]) -> int:
    """Whose held shard goes next (of the users in `first_job`: user -> pk of their oldest job
    with a held shard): the fewest in flight, then the one whose last shard started longest
    ago (`last`: user -> when; a user never served before all), then the oldest job."""
    return min(first_job, key=lambda u: (flight.get(u, 0), last.get(u) is not None,
                                         last.get(u) or 0, first_job[u]))


def dispatch_pending(app: Celery, session: Session, settings: Settings) -> int:
    """Sends held shards of users' jobs while fewer than `user_slots` are in flight (sent and
    not finished), each to the user with the fewest in flight (ties: the user whose last
    shard started longest ago, then the oldest job), that user's oldest job's lowest held
    shard; first it takes back slots for users below their fair share
    (`preempt_over_share`). Returns how many were sent.

    The broker's queues are first in, first out: a job's shards sent all at once would hold
    every later job behind them. Sent this way, as many as the workers can take, a shard that
    finishes lets the next one out, and a user with nothing running goes first: another
    user's small job waits for at most the first shard to finish, or `preempt_after_s` (jobs
    of the catalog keep their own queue and are sent at once). Two dispatchers at the same
    moment may send one shard each past the count; a shard is never sent twice (the send
    claims its task id).
    """
    slots = user_slots(session, settings)
    preempt_over_share(session, settings, slots)
    rows = _users_shards(session)
    held = [r for r in rows if r.status == QUEUED and r.task_id is None]
    if not held:
        return 0
    flight = _in_flight(rows)
    free = slots - sum(flight.values())
    if free <= 0:
        return 0
    # when each user's last shard started (of the jobs still running): of users with as many
    # in flight, the one served longest ago goes first, a user never served before all
    last = dict(session.execute(
        select(Job.user_id, func.max(Shard.started_at)).join(Job, Shard.job_pk == Job.pk)
        .where(Job.status.in_((QUEUED, RUNNING)), Job.user_id.in_({r.user_id for r in held}))
        .group_by(Job.user_id)).all())
    sent = 0
    while free > 0 and held:
        first_job = {}
        for r in held:
            first_job.setdefault(r.user_id, r.pk)
        user = next_user(first_job, flight, last)
        pick = next(r for r in held if r.user_id == user)
        held.remove(pick)
        task_id = state.send_held_shard(session, pick.id)
        if task_id is None:
            continue
        job = session.get(Job, pick.pk)
        name = RUN_WHOLE if job.mode == SEQUENTIAL else RUN_SHARD
        args = [job.id] if job.mode == SEQUENTIAL else [job.id, pick.index]
        if not _send(app, name, args, task_id):
            # The broker is away: the shard is held again (not in flight, not left to go stale
            # for `stale_after_s`), and the next dispatch sends it, the reconciler's at the
            # latest. Had the message got through after all, whichever of the two messages
            # comes first claims the shard and the other finds it taken (state.claim_shard).
            state.hold_shard(session, pick.id, task_id)
            break
        flight[user] = flight.get(user, 0) + 1
        free -= 1
        sent += 1
    return sent


def is_held(shard: Shard) -> bool:
    """A queued shard not sent yet: it waits for a slot (`dispatch_pending`), not for a
    message."""
    return shard.status == QUEUED and shard.task_id is None


def enqueue_merge(app: Celery, job_id: str) -> bool:
    return _send(app, MERGE, [job_id], uuid.uuid4().hex)


def enqueue_validation(app: Celery, architecture_id: str) -> bool:
    """Queues the validation of an uploaded architecture (worker/architecture_validation.py)."""
    return _send(app, VALIDATE_ARCHITECTURE, [architecture_id], uuid.uuid4().hex)


def validation_slots(session: Session, settings: Settings) -> int:
    """How many validations may be at the broker or running at once: the processes of the
    connected workers that take the `validate` queue; at least one."""
    from jobs.fleet import connected_workers

    return max(1, sum(max(1, w.processes) for w in connected_workers(session, settings)
                      if w.queues is not None and VALIDATE_QUEUE in w.queues.split(",")))


def validation_lost_after_s(settings: Settings) -> float:
    """Seconds after which a sent validation that has not finished is taken for lost (its
    message lost with a killed worker, as the file-system broker loses a claimed one) and held
    again: one validation that a racing dispatch sent before it, then its own, each at most
    `architecture_validation_timeout_s`, and a minute for the sandboxes' start; never past
    `stale_after_s`. Without it one lost message would hold a one-process lane for
    `stale_after_s` (15 minutes), every user's uploads behind it."""
    return min(settings.stale_after_s, 2 * settings.architecture_validation_timeout_s + 60)


def dispatch_validations(app: Celery, session: Session, settings: Settings) -> int:
    """Sends held validations (architectures `validating`, not sent yet) while fewer than
    `validation_slots` are in flight, each to the user `next_user` picks, the rule of shard
    slots (the fewest in flight, ties to the user whose last validation was sent longest ago,
    then the oldest upload); returns how many were sent.

    The lane's queue is first in, first out: validations sent at upload put one user's burst
    of 20 archives (of up to a minute each) before every other user's. Held in the database
    and sent one per free process of the lane, another user's upload waits for at most the
    validations running when it came. Called at upload, after each validation, at each worker
    start and each reconciler pass; two callers at once may send one past the count, never one
    architecture twice (the send claims the row).
    """
    rows = session.execute(
        select(Architecture.pk, Architecture.id, Architecture.user_id,
               Architecture.validation_sent_at)
        .where(Architecture.status == VALIDATING).order_by(Architecture.pk)).all()
    held = [r for r in rows if r.validation_sent_at is None]
    if not held:
        return 0
    flight = Counter(r.user_id for r in rows if r.validation_sent_at is not None)
    free = validation_slots(session, settings) - sum(flight.values())
    if free <= 0:
        return 0
    last = dict(session.execute(
        select(Architecture.user_id, func.max(Architecture.validation_sent_at))
        .where(Architecture.user_id.in_({r.user_id for r in held}))
        .group_by(Architecture.user_id)).all())
    sent = 0
    while free > 0 and held:
        first: dict[int, int] = {}
        for r in held:
            first.setdefault(r.user_id, r.pk)
        user = next_user(first, flight, last)
        pick = next(r for r in held if r.user_id == user)
        held.remove(pick)
        if not state.send_held_validation(session, pick.pk):
            continue
        if not enqueue_validation(app, pick.id):
            # the broker is away: held again, sent by the next dispatch (the reconciler's)
            state.hold_validation(session, pick.pk)
            break
        flight[pick.user_id] += 1
        free -= 1
        sent += 1
    return sent


def enqueue_count(app: Celery, architecture: str, input_shape: Sequence[int],
                  num_outputs: int) -> bool:
    """Queues the count of a torchvision builder's cost (worker/architecture_cost.py)."""
    return _send(app, COUNT_ARCHITECTURE, [architecture, list(input_shape), num_outputs],
                 uuid.uuid4().hex)


def revoke_job(app: Celery, job: Job) -> None:
    """Best effort: drops queued messages; running shards stop at their next cooperative check."""
    ids = [s.task_id for s in job.shards if s.task_id]
    if not ids:
        return
    try:
        app.control.revoke(ids)
    except Exception:  # noqa: BLE001 (the row already says cancelled; workers check it)
        log.warning("revoke failed for job %s", job.id, exc_info=True)
