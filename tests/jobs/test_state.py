"""State transitions (jobs/state.py) on SQLite: every move is conditional, so duplicate, late and
racing messages cannot move a row backwards."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery
from sqlalchemy import event
from sqlalchemy.orm import Session

from jobs import state
from jobs.create import create_job
from store.blobs import record_blob
from store.db import get_sessionmaker
from store.models import (
    CANCELLED,
    CATALOG_BUILDING,
    CATALOG_FAILED,
    CATALOG_READY,
    FAILED,
    ORIGIN_BUILT,
    ORIGIN_SHIPPED,
    QUEUED,
    READY,
    REJECTED,
    RUNNING,
    SHARDED,
    SUCCEEDED,
    ApiKey,
    Architecture,
    CatalogEntry,
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
    assert not state.fail_job(session, job.pk, "too late")
    session.refresh(job)
    assert (job.status, job.error) == (CANCELLED, None)
    other = _job(session, app, alice)
    assert state.fail_job(session, other.pk, "x" * 5000)
    session.refresh(other)
    assert other.status == FAILED and len(other.error) == 4000
    assert all(s.status == CANCELLED for s in other.shards)


def test_a_lost_queued_shard_given_up_on_fails_with_its_job(
        session: Session, app: Celery, alice: ApiKey) -> None:
    """The reconciler gives up on a shard whose message was lost once it has used its attempts:
    the queued shard fails with its job, and the job's other queued shard is cancelled."""
    job = _job(session, app, alice)
    lost, other = job.shards
    assert state.fail_shard_and_job(session, job.pk, lost.id, "shard 0: gave up")
    session.refresh(lost)
    session.refresh(other)
    assert (lost.status, lost.error, other.status) == (FAILED, "shard 0: gave up", CANCELLED)


def test_a_shard_that_fails_fails_its_job_in_the_same_commit(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    """The job and the running shard that failed it move together (before, the job was failed
    and committed first: a reader in between saw it failed with that shard still running,
    tests/service/test_jobs_e2e.py's failing job under load); its queued shards, sent or
    held, are cancelled with it (nothing would ever run them: they read queued forever)."""
    job = _job(session, app, alice, shards=3)
    running, queued, held = job.shards
    assert state.hold_shard(session, held.id, held.task_id)
    assert state.claim_shard(session, job, running, running.task_id, settings)
    commits = []

    def committed(_: Session) -> None:
        commits.append(1)

    event.listen(session, "after_commit", committed)
    try:
        assert state.fail_shard_and_job(session, job.pk, running.id, "shard 0: boom")
    finally:
        event.remove(session, "after_commit", committed)
    assert len(commits) == 1
    session.refresh(job)
    session.refresh(running)
    session.refresh(queued)
    session.refresh(held)
    assert (job.status, job.error) == (FAILED, "shard 0: boom")
    assert (running.status, running.error) == (FAILED, "shard 0: boom")
    assert (queued.status, held.status) == (CANCELLED, CANCELLED)
    assert not state.claim_shard(session, job, queued, queued.task_id, settings)
    assert not state.fail_shard_and_job(session, job.pk, running.id, "late")  # finished
    session.refresh(job)
    assert job.error == "shard 0: boom"


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


def _held(session: Session, app: Celery, key: ApiKey) -> Job:
    """A job whose shards are held: no free slot sent them (queued, no task id)."""
    job = create_job(session, app, user_id=key.user_id, api_key_id=key.id, kind="nads",
                     mode=SHARDED, spec={"architecture": "lenet"}, estimate=None,
                     ranges=[(0, 10), (10, 20)], settings=Settings(dispatch_slots=1))
    assert job.shards[1].task_id is None
    return job


def test_only_a_held_shard_is_sent_and_only_a_sent_one_held_again(
        session: Session, app: Celery, alice: ApiKey) -> None:
    shard = _held(session, app, alice).shards[1]
    task_id = state.send_held_shard(session, shard.id)
    assert task_id is not None
    assert state.send_held_shard(session, shard.id) is None  # sent already: a racing dispatch
    assert not state.hold_shard(session, shard.id, "another-task")
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (QUEUED, task_id)
    assert state.hold_shard(session, shard.id, task_id)
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (QUEUED, None)


def test_a_shard_is_sent_again_only_as_the_caller_found_it(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    seen = shard.task_id
    assert state.claim_shard(session, job, shard, seen, settings)
    assert state.resend_shard(session, shard.id, QUEUED, seen) is None  # claimed meanwhile
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (RUNNING, seen)
    fresh = state.resend_shard(session, shard.id, RUNNING, seen)
    assert fresh is not None and fresh != seen
    assert state.resend_shard(session, shard.id, RUNNING, seen) is None  # a second reconciler
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (QUEUED, fresh)


def test_a_claim_on_a_row_read_before_another_claim_does_nothing(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    with get_sessionmaker(settings.resolved_database_url)() as other:
        rival_job = other.get(Job, job.pk)
        rival = rival_job.shards[0]
        assert state.claim_shard(other, rival_job, rival, "task-2", settings)
    # `shard` still reads queued: the claim decided on that is refused by the row
    assert shard.status == QUEUED
    assert not state.claim_shard(session, job, shard, "task-1", settings)
    assert (shard.status, shard.task_id, shard.attempts) == (RUNNING, "task-2", 1)


def test_a_heartbeat_is_renewed_only_by_the_task_owning_the_running_shard(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    assert not state.beat_shard(session, shard.id, shard.task_id)  # queued: nothing to renew
    assert state.claim_shard(session, job, shard, "task-1", settings)
    old = utcnow() - timedelta(seconds=60)
    shard.heartbeat_at = old
    session.commit()
    assert not state.beat_shard(session, shard.id, "task-2")
    session.refresh(shard)
    assert shard.heartbeat_at == old
    assert state.beat_shard(session, shard.id, "task-1")
    session.refresh(shard)
    assert shard.heartbeat_at > old


def test_only_a_running_shard_finishes(session: Session, app: Celery, alice: ApiKey,
                                       settings: Settings) -> None:
    job = _job(session, app, alice)
    queued, running = job.shards
    assert not state.finish_shard(session, queued.id, FAILED, error="late")
    session.refresh(queued)
    assert (queued.status, queued.error) == (QUEUED, None)
    assert state.claim_shard(session, job, running, "t", settings)
    record_blob(session, "a" * 64, 1)
    session.commit()
    assert state.finish_shard(session, running.id, SUCCEEDED, partial_sha256="a" * 64)
    # a duplicate's failure does not overwrite the success
    assert not state.finish_shard(session, running.id, FAILED, error="duplicate")
    session.refresh(running)
    assert (running.status, running.partial_sha256, running.error) == (SUCCEEDED, "a" * 64,
                                                                        None)


def test_only_the_owning_task_cancels_its_running_shard(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _job(session, app, alice)
    shard = job.shards[0]
    assert state.claim_shard(session, job, shard, "t1", settings)
    assert state.preempt_shard(session, shard.id, "t1")
    assert not state.cancel_own_shard(session, shard.id, "t1")  # preempted: stays held
    session.refresh(shard)
    assert (shard.status, shard.task_id) == (QUEUED, None)
    assert state.claim_shard(session, job, shard, "t2", settings)
    assert state.cancel_own_shard(session, shard.id, "t2")
    session.refresh(shard)
    assert shard.status == CANCELLED


def test_only_a_queued_job_is_started(session: Session, app: Celery, alice: ApiKey) -> None:
    job = _job(session, app, alice)
    assert state.start_job(session, job.pk)
    assert not state.start_job(session, job.pk)
    cancelled = _job(session, app, alice)
    assert state.cancel_job(session, cancelled)
    assert not state.start_job(session, cancelled.pk)
    session.refresh(cancelled)
    assert (cancelled.status, cancelled.started_at) == (CANCELLED, None)


def _merging(session: Session, app: Celery, key: ApiKey, settings: Settings) -> Job:
    """A job whose every shard succeeded, its merge claimed (queued)."""
    job = _job(session, app, key, shards=1)
    assert state.claim_shard(session, job, job.shards[0], "t", settings)
    record_blob(session, "a" * 64, 1)
    session.commit()
    assert state.finish_shard(session, job.shards[0].id, SUCCEEDED, partial_sha256="a" * 64)
    assert state.claim_merge(session, job.pk)
    return job


def test_a_merge_is_sent_again_once_and_only_when_silent(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _merging(session, app, alice, settings)
    before = utcnow() - timedelta(seconds=60)
    assert not state.resend_merge(session, job.pk, before)  # queued just now: not silent
    assert state.resend_merge(session, job.pk, utcnow())
    assert not state.resend_merge(session, job.pk, before)  # a second reconciler
    assert state.cancel_job(session, job)
    assert not state.resend_merge(session, job.pk, utcnow())


def test_a_merge_starts_only_on_a_running_job_not_merged_yet(
        session: Session, app: Celery, alice: ApiKey, settings: Settings) -> None:
    job = _merging(session, app, alice, settings)
    assert state.start_merge(session, job.pk)
    assert state.start_merge(session, job.pk)  # a redelivered merge message starts again
    assert state.succeed_job(session, job.pk, {"done": True})
    session.commit()
    assert not state.start_merge(session, job.pk)
    session.refresh(job)
    assert (job.status, job.merge_status) == (SUCCEEDED, SUCCEEDED)
    other = _merging(session, app, alice, settings)
    assert state.cancel_job(session, other)
    assert not state.start_merge(session, other.pk)
    session.refresh(other)
    assert other.merge_status == QUEUED


def test_only_a_running_job_succeeds(session: Session, app: Celery, alice: ApiKey,
                                     settings: Settings) -> None:
    job = _merging(session, app, alice, settings)
    assert state.cancel_job(session, job)
    assert not state.succeed_job(session, job.pk, {"late": True})
    session.commit()
    session.refresh(job)
    assert (job.status, job.summary) == (CANCELLED, None)


def _architecture(session: Session, key: ApiKey) -> Architecture:
    """An uploaded architecture validating, its validation held."""
    record_blob(session, "c" * 64, 1)
    row = Architecture(id="arch-1", user_id=key.user_id, name="net", filename="net.pt",
                       input_shape=[1, 28, 28], size=1, sha256="c" * 64)
    session.add(row)
    session.commit()
    return row


def test_only_a_held_validation_is_sent(session: Session, alice: ApiKey) -> None:
    row = _architecture(session, alice)
    assert state.send_held_validation(session, row.pk)
    session.refresh(row)
    sent_at = row.validation_sent_at
    assert not state.send_held_validation(session, row.pk)  # a second dispatcher
    session.refresh(row)
    assert row.validation_sent_at == sent_at


def test_only_a_validating_architecture_is_held_again(session: Session, alice: ApiKey) -> None:
    row = _architecture(session, alice)
    assert state.send_held_validation(session, row.pk)
    assert state.finish_validation(session, row.id, REJECTED, None, "file: not an archive")
    assert not state.hold_validation(session, row.pk)  # a reconciler late for it
    session.refresh(row)
    assert (row.status, row.validation_sent_at is not None) == (REJECTED, True)


def test_only_a_validating_architecture_is_validated(session: Session, alice: ApiKey) -> None:
    row = _architecture(session, alice)
    assert state.finish_validation(session, row.id, READY, {"format": "export"}, None)
    assert not state.finish_validation(session, row.id, REJECTED, None, "duplicate")
    session.refresh(row)
    assert (row.status, row.format, row.reason) == (READY, "export", None)


def _entry(session: Session, status: str = CATALOG_BUILDING) -> CatalogEntry:
    entry = CatalogEntry(name="lenet", status=status, spec={"num_networks": 40},
                         target_stability=0.9, stability_k=5, round_networks=20,
                         shard_networks=10)
    session.add(entry)
    session.commit()
    return entry


def test_a_catalog_round_starts_only_from_the_rounds_seen(session: Session) -> None:
    entry = _entry(session)
    assert state.start_catalog_round(session, entry.id, 0)
    assert not state.start_catalog_round(session, entry.id, 0)  # another process was first
    session.refresh(entry)
    assert entry.rounds == 1


def test_a_round_job_is_attached_only_to_its_round(session: Session, app: Celery,
                                                   alice: ApiKey) -> None:
    entry = _entry(session)
    assert state.start_catalog_round(session, entry.id, 0)
    job = _job(session, app, alice)
    assert not state.attach_catalog_round(session, entry.id, 2, job.pk)  # entry on round 1
    session.commit()
    session.refresh(entry)
    assert entry.job_pk is None


def test_a_catalog_entry_is_ready_only_with_its_current_round(
        session: Session, app: Celery, alice: ApiKey) -> None:
    entry = _entry(session)
    current, old = _job(session, app, alice), _job(session, app, alice)
    entry.job_pk = current.pk
    session.commit()
    assert not state.finish_catalog_entry(session, entry.id, old.pk, networks=20,
                                          stability=0.95, stopped_early=True, sha256=None,
                                          built_at=utcnow())
    session.refresh(entry)
    assert (entry.status, entry.networks) == (CATALOG_BUILDING, None)


def test_a_catalog_entry_fails_once_and_only_with_its_current_round(
        session: Session, app: Celery, alice: ApiKey) -> None:
    entry = _entry(session)
    current, old = _job(session, app, alice), _job(session, app, alice)
    entry.job_pk = current.pk
    session.commit()
    assert not state.fail_catalog_entry(session, entry.id, old.pk, "old round")
    assert state.fail_catalog_entry(session, entry.id, current.pk, "round 1 failed")
    assert not state.fail_catalog_entry(session, entry.id, current.pk, "again")
    session.refresh(entry)
    assert (entry.status, entry.error) == (CATALOG_FAILED, "round 1 failed")


def test_only_a_ready_catalog_entry_is_restarted(session: Session, settings: Settings) -> None:
    entry = _entry(session)
    entry.rounds = 2
    session.commit()
    assert not state.restart_catalog_entry(session, entry.id, {"num_networks": 80}, settings)
    session.refresh(entry)
    assert (entry.rounds, entry.spec) == (2, {"num_networks": 40})
    entry.status = CATALOG_READY
    session.commit()
    assert state.restart_catalog_entry(session, entry.id, {"num_networks": 80}, settings)
    session.refresh(entry)
    assert (entry.status, entry.rounds, entry.spec) == (CATALOG_BUILDING, 0,
                                                         {"num_networks": 80})


def test_only_a_shipped_catalog_entry_takes_a_newer_shipped_one(session: Session) -> None:
    """A `--replace` rebuild that took the entry between install_entry's read and its write
    is never overwritten by the shipped files."""
    entry = _entry(session, CATALOG_READY)
    entry.origin = ORIGIN_BUILT
    session.commit()
    assert not state.update_shipped_entry(session, entry.id, {"networks": 10_000})
    session.refresh(entry)
    assert (entry.origin, entry.networks) == (ORIGIN_BUILT, None)
    entry.origin = ORIGIN_SHIPPED
    session.commit()
    assert state.update_shipped_entry(session, entry.id, {"networks": 10_000})
    session.refresh(entry)
    assert entry.networks == 10_000
