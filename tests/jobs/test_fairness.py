"""Fair dispatch (jobs/dispatch.py) on SQLite and the embedded broker: users' shards go out
only as far as the workers have processes; a finished shard's slot goes to the user with the
fewest in flight, so one user's large job holds another's small one back by one shard at most;
the reconciler neither counts a held shard as lost nor forgets to send it."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session

from jobs import state
from jobs.broker import make_celery
from jobs.create import create_job
from jobs.dispatch import dispatch_pending, fair_share, user_slots
from store.auth import CATALOG_USER
from store.blobs import record_blob
from store.models import (
    QUEUED,
    RUNNING,
    SHARDED,
    SUCCEEDED,
    ApiKey,
    Job,
    Shard,
    User,
    Worker,
    utcnow,
)
from store.settings import Settings
from tests.embedded import add_user
from worker.reconcile import reconcile_once


def _fleet(session: Session, processes: int, queues: str = "cpu,gpu", name: str = "w1"
           ) -> Worker:
    worker = Worker(name=name, hostname="h", pid=1, processes=processes, queues=queues,
                    last_seen=utcnow())
    session.add(worker)
    session.commit()
    return worker


def _submit(session: Session, app: Celery, key: ApiKey, shards: int, settings: Settings) -> Job:
    return create_job(session, app, user_id=key.user_id, api_key_id=key.id, kind="nads",
                      mode=SHARDED, spec={}, estimate=None,
                      ranges=[(i, i + 1) for i in range(shards)], settings=settings)


def _finish(session: Session, job: Job, index: int, settings: Settings) -> None:
    session.refresh(job)
    shard = job.shards[index]
    assert shard.task_id is not None, "a held shard cannot run"
    assert state.claim_shard(session, job, shard, shard.task_id, settings, worker="w1")
    state.finish_shard(session, shard.id, SUCCEEDED, partial_sha256="c" * 64)


def _sent(job: Job, session: Session) -> list[int]:
    session.refresh(job)
    return [s.index for s in job.shards if s.task_id is not None]


def test_a_small_job_goes_before_the_rest_of_a_large_one(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    settings = settings.model_copy(update={"dispatch_slots": 0})  # from the fleet
    _fleet(session, processes=2)
    bob = add_user(session, "bob")
    record_blob(session, "c" * 64, 1)
    session.commit()
    large = _submit(session, app, alice, 6, settings)
    assert _sent(large, session) == [0, 1]  # two processes: two shards out, four held
    small = _submit(session, app, bob, 1, settings)
    assert _sent(small, session) == []  # every slot is taken
    _finish(session, large, 0, settings)
    assert dispatch_pending(app, session, settings) == 1
    assert _sent(small, session) == [0], "bob (nothing in flight) gets the freed slot"
    assert _sent(large, session) == [0, 1]
    _finish(session, large, 1, settings)
    assert dispatch_pending(app, session, settings) == 1
    assert _sent(large, session) == [0, 1, 2]
    assert dispatch_pending(app, session, settings) == 0  # in flight: 2 of 2


def test_round_robin_between_users_with_large_jobs(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    settings = settings.model_copy(update={"dispatch_slots": 2})
    bob = add_user(session, "bob")
    record_blob(session, "c" * 64, 1)
    session.commit()
    a = _submit(session, app, alice, 4, settings)
    b = _submit(session, app, bob, 4, settings)
    assert (_sent(a, session), _sent(b, session)) == ([0, 1], [])
    _finish(session, a, 0, settings)
    dispatch_pending(app, session, settings)
    assert (_sent(a, session), _sent(b, session)) == ([0, 1], [0])
    _finish(session, a, 1, settings)
    dispatch_pending(app, session, settings)  # alice has none in flight, bob one
    assert (_sent(a, session), _sent(b, session)) == ([0, 1, 2], [0])
    _finish(session, b, 0, settings)
    dispatch_pending(app, session, settings)
    assert (_sent(a, session), _sent(b, session)) == ([0, 1, 2], [0, 1])


def test_slots_are_the_processes_less_those_busy_with_uncounted_shards(
        session: Session, app: Celery, settings: Settings) -> None:
    settings = settings.model_copy(update={"dispatch_slots": 0})
    assert user_slots(session, settings) == 1  # no worker: one shard goes out to wait
    _fleet(session, processes=2, queues="cpu,gpu", name="users")
    _fleet(session, processes=1, queues="catalog,cpu,gpu", name="both")
    assert user_slots(session, settings) == 3

    def running(user: User, status: str, worker: str, age_s: float = 0) -> Shard:
        job = Job(id=f"{user.name}-{status}-{worker}", user_id=user.id, kind="nads",
                  mode=SHARDED, spec={}, status=status)
        session.add(job)
        session.commit()
        shard = Shard(job_pk=job.pk, index=0, start=0, stop=1, status=RUNNING, worker=worker,
                      heartbeat_at=utcnow() - timedelta(seconds=age_s))
        session.add(shard)
        session.commit()
        return shard

    catalog, alice = User(name=CATALOG_USER), User(name="alice")
    session.add_all([catalog, alice])
    session.commit()
    running(catalog, RUNNING, "both")  # a catalog shard on the worker that takes both
    assert user_slots(session, settings) == 2
    # a user's job cancelled while its shard runs: the shard holds its process until it stops
    stopping = running(alice, "cancelled", "users")
    assert user_slots(session, settings) == 1
    stopping.heartbeat_at = utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 1)
    session.commit()  # its process died long ago: the slot is free again
    assert user_slots(session, settings) == 2
    session.add(Worker(name="gone", hostname="h", pid=2, processes=8, queues="gpu",
                       last_seen=utcnow() - timedelta(seconds=settings.heartbeat_timeout_s + 1)))
    session.commit()
    assert user_slots(session, settings) == 2  # a worker that stopped beating has no slots


def test_the_reconciler_keeps_held_shards_held_and_fills_free_slots(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    settings = settings.model_copy(update={"dispatch_slots": 1})
    job = _submit(session, app, alice, 3, settings)
    assert _sent(job, session) == [0]
    for shard in job.shards:  # long held: still not lost, not sent past the slots
        shard.updated_at = utcnow() - timedelta(seconds=settings.stale_after_s + 1)
    session.commit()
    assert reconcile_once(session, app, settings) == 1  # shard 0's message, lost: again
    assert _sent(job, session) == [0]
    assert all(s.status == QUEUED for s in job.shards)
    more = settings.model_copy(update={"dispatch_slots": 3})  # a worker joined
    assert reconcile_once(session, app, more) == 2
    assert _sent(job, session) == [0, 1, 2]


def test_one_slot_alternates_between_users(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    """With one slot both users always have none in flight when it frees: the user whose
    last shard started longest ago goes first."""
    settings = settings.model_copy(update={"dispatch_slots": 1})
    bob = add_user(session, "bob")
    record_blob(session, "c" * 64, 1)
    session.commit()
    a = _submit(session, app, alice, 3, settings)
    b = _submit(session, app, bob, 3, settings)
    order = []
    for _ in range(6):
        running = [(job, i) for job in (a, b) for i in _sent(job, session)
                   if job.shards[i].status == QUEUED]
        assert len(running) == 1, running
        job, index = running[0]
        order.append(("alice" if job is a else "bob", index))
        _finish(session, job, index, settings)
        dispatch_pending(app, session, settings)
    assert order == [("alice", 0), ("bob", 0), ("alice", 1), ("bob", 1), ("alice", 2),
                     ("bob", 2)]


def test_a_shard_the_broker_did_not_take_is_held_again_and_sent_next_time(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    """A send that fails leaves no shard 'in flight' for `stale_after_s`: it is held again, and
    the reconciler's next pass sends it once the broker answers."""
    settings = settings.model_copy(update={"dispatch_slots": 2})
    away = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    job = _submit(session, away, alice, 3, settings)
    assert _sent(job, session) == []
    assert all(s.status == QUEUED for s in job.shards)
    assert reconcile_once(session, app, settings) == 2  # both slots, at once
    assert _sent(job, session) == [0, 1]


def _run(session: Session, job: Job, index: int, settings: Settings, age_s: float) -> Shard:
    """The sent shard `index` claimed by its task, started `age_s` ago."""
    session.refresh(job)
    shard = job.shards[index]
    assert state.claim_shard(session, job, shard, shard.task_id, settings, worker="w1")
    shard.started_at = utcnow() - timedelta(seconds=age_s)
    session.commit()
    return shard


def test_fair_share_is_an_equal_part_rounded_up() -> None:
    assert [fair_share(2, n) for n in (0, 1, 2, 3)] == [2, 2, 1, 1]
    assert [fair_share(5, n) for n in (1, 2, 3)] == [5, 3, 2]


def test_a_user_over_their_share_is_preempted_for_a_user_who_waits(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    """Alice alone takes both slots; when Bob submits, the shard of hers that started last
    (and has run `preempt_after_s`) is taken back: held again with its attempt not counted,
    its task told to stop, and Bob's shard sent into the slot."""
    settings = settings.model_copy(update={"dispatch_slots": 2, "preempt_after_s": 30})
    bob = add_user(session, "bob")
    record_blob(session, "c" * 64, 1)
    session.commit()
    large = _submit(session, app, alice, 4, settings)
    first = _run(session, large, 0, settings, age_s=120)
    second = _run(session, large, 1, settings, age_s=60)
    task_id = second.task_id
    small = _submit(session, app, bob, 1, settings)
    assert _sent(small, session) == [0], "bob's shard waits for nothing"
    session.refresh(second)
    session.refresh(first)
    assert (second.status, second.task_id, second.attempts) == (QUEUED, None, 0)
    assert first.status == RUNNING, "the shard with more work done keeps running"
    assert state.is_stopped(session, large.pk, second.id, task_id)
    assert not state.is_stopped(session, large.pk, first.id, first.task_id)
    state.cancel_own_shard(session, second.id, task_id)  # its task stops: the shard stays held
    session.refresh(second)
    assert second.status == QUEUED and second.task_id is None
    # one each now: nobody is over their share, nothing more is taken back
    assert dispatch_pending(app, session, settings) == 0
    session.refresh(first)
    assert first.status == RUNNING
    _finish(session, small, 0, settings)  # bob is done: alice gets both slots again
    assert dispatch_pending(app, session, settings) == 1
    assert _sent(large, session) == [0, 1]


def test_no_preemption_of_young_shards_nor_when_switched_off(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    settings = settings.model_copy(update={"dispatch_slots": 2, "preempt_after_s": 30})
    bob = add_user(session, "bob")
    large = _submit(session, app, alice, 4, settings)
    shards = [_run(session, large, i, settings, age_s=10) for i in (0, 1)]
    small = _submit(session, app, bob, 1, settings)
    assert _sent(small, session) == [], "alice's shards have not run 30 s yet"
    off = settings.model_copy(update={"preempt_after_s": 0})
    for shard in shards:
        shard.started_at = utcnow() - timedelta(seconds=300)
    session.commit()
    assert dispatch_pending(app, session, off) == 0
    assert dispatch_pending(app, session, settings) == 1
    assert _sent(small, session) == [0]
