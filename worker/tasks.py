"""Celery tasks: one per unit of work. Each reads the job row, loads what the kind's runner
reads (worker/inputs.py), calls the runner, writes blobs and moves the rows (jobs/state.py).
Nothing else in the worker's job path opens the database or the blob store. A task that finds
its work already done (duplicate message) does nothing."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import delete
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from jobs import catalog, state
from jobs.broker import MERGE, RECONCILE, RUN_SHARD, RUN_WHOLE
from jobs.budget import Budget, shard_budget
from jobs.dispatch import dispatch_pending, enqueue_merge
from jobs.fleet import process_rate, rate_key
from jobs.kinds import pinned_blob_paths
from nadcore import Cancelled
from store import blobgc
from store.blobs import Blobs, keep_blob, open_blob_store
from store.db import get_sessionmaker, session_scope
from store.models import (
    RUNNING,
    SUCCEEDED,
    Artifact,
    Job,
    Shard,
    Worker,
)
from store.settings import get_settings
from worker.app import app
from worker.calibrate import record_shard, shard_flops
from worker.heartbeat import shard_heartbeat
from worker.inputs import load_inputs
from worker.kinds import runner, whole_job_runner
from worker.kinds.base import Claimed, Inputs
from worker.reconcile import reconcile_once
from worker.sandbox import SandboxCancelled

log = logging.getLogger(__name__)

# Errors worth retrying: the database or the disk was briefly unavailable.
TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


class JobTask(Task):
    """Retries transient errors with backoff; any other failure fails the job (not retried)."""

    autoretry_for = TRANSIENT
    retry_backoff = 2
    retry_backoff_max = 120
    retry_jitter = True

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        return get_settings().task_max_retries

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,
                   einfo: object) -> None:
        job_id = args[0] if args else kwargs.get("job_id")
        if isinstance(exc, SoftTimeLimitExceeded):
            message = f"time limit exceeded ({get_settings().task_soft_time_limit_s} s)"
        else:
            message = f"{type(exc).__name__}: {exc}"
        if len(args) > 1:
            message = f"shard {args[1]}: {message}"
        log.error("job %s failed: %s", job_id, message)
        try:
            with session_scope(_db_url()) as session:
                job = state.load_job(session, job_id)
                if job is not None:
                    index = args[1] if len(args) > 1 else 0
                    shard = next((s for s in job.shards if s.index == index), None)
                    # the shard if it was running, and the job, in one transaction
                    state.fail_shard_and_job(session, job.pk,
                                             None if shard is None else shard.id, message)
        except DBAPIError:
            log.exception("could not record the failure of job %s", job_id)
        _release(None, self.request.hostname)


def _db_url() -> str:
    return get_settings().resolved_database_url


def _blobs() -> Blobs:
    return open_blob_store(get_settings())


def _inputs(kind: str, spec: dict, user_id: int, partials: list[str] | None = None) -> Inputs:
    """What the runner of `kind` reads for a shard of `spec`, or for its merge given the
    shards' `partials` (worker/inputs.py)."""
    with session_scope(_db_url()) as session:
        return load_inputs(session, _blobs(), runner(kind), spec, user_id, partials)


class _Throttle:
    """`due()` is true at most once per `interval` seconds, and once more when first forced
    (a shard's final progress). Only once: a sandboxed model's progress frames are its own
    word, and one that repeats "done" (565,000 frames in 3 s measured) would otherwise make
    each a database round trip."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = float("-inf")
        self.forced = False

    def due(self, force: bool = False) -> bool:
        now = time.monotonic()
        if (force and not self.forced) or now - self.last >= self.interval:
            self.forced = self.forced or force
            self.last = now
            return True
        return False


def _callbacks(claimed: Claimed) -> tuple[Callable[[int, int], None], Callable[[], bool]]:
    """progress(done, total) and should_stop() for nadcore, both throttled DB round trips;
    should_stop turns true when the job is cancelled or the shard preempted (jobs/dispatch.py)."""
    shard_id = claimed.shard_id
    interval = get_settings().progress_interval_s
    progress_gate, stop_gate = _Throttle(interval), _Throttle(interval)
    stopped = False

    def progress(done: int, total: int) -> None:
        if progress_gate.due(force=done >= total):
            with session_scope(_db_url()) as session:
                state.record_progress(session, shard_id, done / max(total, 1))

    def should_stop() -> bool:
        nonlocal stopped
        if not stopped and stop_gate.due():
            with session_scope(_db_url()) as session:
                stopped = state.is_stopped(session, claimed.job_pk, shard_id,
                                           claimed.task_id)
        return stopped

    return progress, should_stop


def _claim(task: Task, job_id: str, index: int) -> Claimed | None:
    with session_scope(_db_url()) as session:
        job = state.load_job(session, job_id)
        if job is None:
            log.warning("job %s does not exist; message dropped", job_id)
            return None
        shard = next((s for s in job.shards if s.index == index), None)
        if shard is None:
            return None
        if not state.claim_shard(session, job, shard, task.request.id, get_settings(),
                                 worker=task.request.hostname):
            log.info("job %s shard %d: nothing to do (%s/%s)", job_id, index, job.status,
                     shard.status)
            return None
        return Claimed(job.pk, job.user_id, job.kind, job.spec, index, shard.id, shard.start,
                       shard.stop, shard.task_id,
                       _budget(session, job, shard, task.request.hostname))


def _budget(session: Session, job: Job, shard: Shard, hostname: str | None) -> Budget | None:
    """The wall-time budget of a shard on an uploaded architecture (jobs/budget.py), at this
    worker's measured rate for the kind; None for a built-in."""
    if not isinstance((job.spec or {}).get("architecture"), dict):
        return None
    total = sum(s.stop - s.start for s in job.shards) or 1
    row = session.get(Worker, hostname) if hostname else None
    rate = process_rate(row, rate_key(job.kind, job.spec)) if row is not None else None
    return shard_budget(get_settings(), job.estimate, (shard.stop - shard.start) / total, rate)


def _release(claimed: Claimed | None, hostname: str | None) -> None:
    """After a shard (whatever its end): its measured throughput goes to this worker's row
    (worker/calibrate.py) and its slot to the next held shard, fairly between users
    (jobs/dispatch.py). Never fails the task: the reconciler dispatches too."""
    try:
        flops = seconds = None
        key = ""  # the rate key of the shard's job (jobs.fleet.rate_key)
        with session_scope(_db_url()) as session:
            if claimed is not None:
                shard = session.get(Shard, claimed.shard_id)
                job = session.get(Job, claimed.job_pk)
                if (shard is not None and job is not None and shard.status == SUCCEEDED
                        and shard.started_at and shard.finished_at):
                    seconds = (shard.finished_at - shard.started_at).total_seconds()
                    total = sum(s.stop - s.start for s in job.shards)
                    flops = shard_flops(job.estimate, shard.stop - shard.start, total)
                    key = rate_key(job.kind, job.spec)
            dispatch_pending(app, session, get_settings())
        if flops is not None and seconds is not None and hostname:
            record_shard(get_settings(), hostname, key, flops, seconds)
    except Exception:  # noqa: BLE001
        log.warning("could not release the slot of a finished shard", exc_info=True)


@app.task(bind=True, base=JobTask, name=RUN_SHARD)
def run_shard(self: Task, job_id: str, index: int) -> None:
    """Computes one shard (the partial sums of a range of networks of a NAD job, the trained
    directions of a range of a probe job, the trained models of a range of poison indices) and
    stores it as a blob."""
    claimed = _claim(self, job_id, index)
    if claimed is None:
        return
    progress, should_stop = _callbacks(claimed)
    try:
        with shard_heartbeat(get_settings(), claimed.shard_id, claimed.task_id):
            inputs = _inputs(claimed.kind, claimed.spec, claimed.user_id)
            part = runner(claimed.kind).run_shard(claimed, inputs, progress, should_stop)
    except (Cancelled, SandboxCancelled):
        _stopped(claimed, self.request.hostname)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "partial.npz"
        part.save(path)
        staged = _blobs().stage(path)
    with session_scope(_db_url()) as session:  # the blob's row before its file: store/blobgc.py
        sha = keep_blob(session, _blobs(), staged)
        if not state.finish_shard(session, claimed.shard_id, SUCCEEDED, partial_sha256=sha):
            # cancelled or preempted meanwhile: the partial is left to the blob collector
            log.info("job %s shard %d: no longer running; its result is dropped", job_id, index)
        elif state.claim_merge(session, claimed.job_pk):
            enqueue_merge(app, job_id)
    _release(claimed, self.request.hostname)


def _stopped(claimed: Claimed, hostname: str | None) -> None:
    """A shard stopped by its job's cancel (it becomes cancelled) or by a preemption (it stays
    held for its next run); either way its slot goes to the next one."""
    with session_scope(_db_url()) as session:
        state.cancel_own_shard(session, claimed.shard_id, claimed.task_id)
    _release(None, hostname)


def _store_artifacts(job_id: str, files: list[tuple[Path, str]], summary: dict) -> None:
    """Stores the files as blobs, records them as the job's artifacts (replacing any earlier
    ones: a merge done twice gives the same list) and moves the job to succeeded."""
    blobs = _blobs()
    staged = [(path.name, media_type, blobs.stage(path)) for path, media_type in files]
    try:
        with session_scope(_db_url()) as session:
            job = state.load_job(session, job_id)
            if job is None or not state.succeed_job(session, job.pk, summary):
                session.rollback()
                log.info("job %s: no longer running; its merged result is dropped", job_id)
                return
            # each blob's row before its file, in the transaction that references it
            stored = [(name, media_type, keep_blob(session, blobs, one), one.size)
                      for name, media_type, one in staged]
            session.execute(delete(Artifact).where(Artifact.job_pk == job.pk))
            for name, media_type, sha, size in stored:
                session.add(Artifact(job_pk=job.pk, name=name, sha256=sha, size=size,
                                     media_type=media_type))
    finally:
        for _, _, one in staged:
            one.discard()


def _store_result(job_id: str, kind: str, result: object, inputs: Inputs) -> None:
    """Stores a whole job's result as its kind's runner writes it (arrays and figures) and
    moves the job to succeeded; NaN or inf anywhere fails the job."""
    with tempfile.TemporaryDirectory() as tmp:
        files, summary = whole_job_runner(kind).result_files(result, inputs, Path(tmp))
        _store_artifacts(job_id, files, summary)


@app.task(bind=True, base=JobTask, name=MERGE)
def merge(self: Task, job_id: str) -> None:
    """Loads every shard's partial, merges them and stores the artifacts."""
    with session_scope(_db_url()) as session:
        job = state.load_job(session, job_id)
        if job is None or job.status != RUNNING or job.merge_status == SUCCEEDED:
            return
        shas = [s.partial_sha256 for s in job.shards]
        if any(s.status != SUCCEEDED for s in job.shards) or None in shas:
            return
        kind, user_id, spec = job.kind, job.user_id, job.spec
        if not state.start_merge(session, job.pk):
            return
    with tempfile.TemporaryDirectory() as tmp:
        files, summary = runner(kind).merge(spec, _inputs(kind, spec, user_id, shas), Path(tmp))
        _store_artifacts(job_id, files, summary)
    with session_scope(_db_url()) as session:  # a catalog round: the next one, or ready
        catalog.on_job_done(session, app, job_id)


@app.task(bind=True, base=JobTask, name=RUN_WHOLE)
def run_whole(self: Task, job_id: str) -> None:
    """The whole job in one task (a SEQUENTIAL plan: a NAD job with early stopping); the
    kind's runner computes it (`run_whole`) and writes its files (`result_files`)."""
    claimed = _claim(self, job_id, 0)
    if claimed is None:
        return
    progress, should_stop = _callbacks(claimed)
    try:
        with shard_heartbeat(get_settings(), claimed.shard_id, claimed.task_id):
            inputs = _inputs(claimed.kind, claimed.spec, claimed.user_id)
            result = whole_job_runner(claimed.kind).run_whole(claimed, inputs, progress,
                                                              should_stop)
    except (Cancelled, SandboxCancelled):
        _stopped(claimed, self.request.hostname)
        return
    with session_scope(_db_url()) as session:
        finished = state.finish_shard(session, claimed.shard_id, SUCCEEDED)
    _release(claimed, self.request.hostname)
    if not finished:  # cancelled or preempted meanwhile: a later run stores it
        log.info("job %s: no longer running; its result is dropped", job_id)
        return
    _store_result(job_id, claimed.kind, result,
                  _inputs(claimed.kind, claimed.spec, claimed.user_id, []))


@app.task(name=RECONCILE)
def reconcile() -> int:
    """Periodic (celery beat): sends again the work whose messages were lost, and collects
    the blobs nothing references every `blob_gc_interval_s` (store/blobgc.py)."""
    with session_scope(_db_url()) as session:
        sent = reconcile_once(session, app, get_settings())
        catalog.sweep(session, app)
    blobgc.collect_if_due(get_sessionmaker(_db_url()), _blobs(), get_settings(),
                          pinned_blob_paths())
    return sent
