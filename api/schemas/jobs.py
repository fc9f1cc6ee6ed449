"""/v1/jobs: a job, its shards, artifacts and progress (the message and time left)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.schemas import utc
from jobs.fleet import human_s
from jobs.kinds import KINDS, REGISTRY
from jobs.queue_wait import QueueSpot
from store.models import (
    JOB_STATES,
    QUEUED,
    RUNNING,
    SEQUENTIAL,
    SUCCEEDED,
    TERMINAL,
    Job,
    utcnow,
)

KindName = Literal[REGISTRY]  # type: ignore[valid-type]  # the registered kinds (jobs/kinds)
JobStatus = Literal[JOB_STATES]  # type: ignore[valid-type]


class Progress(BaseModel):
    fraction: float = Field(description="0 to 1, aggregated over the shards.")
    message: str
    eta_s: float | None = Field(None, description="Seconds left: while it runs, from its rate "
                                "so far; queued, the wait for its turn and its run "
                                "(`queue.done_s`; else its estimated run time, "
                                "estimate.run.run_s); null when unknown.")


class QueueOut(BaseModel):
    """Where a queued or running job stands among the users' jobs (jobs/queue_wait.py): the
    shards running and waiting played forward on the connected workers at their rates."""

    position: int = Field(description="1 for the next job to start of those waiting, 2 for the "
                          "one after...; 0 once a shard of it runs or is sent to a worker.")
    shards_ahead: int = Field(description="Shards of other jobs running now or starting before "
                              "its first waiting shard.")
    wait_s: float | None = Field(description="Seconds until its first shard starts (0 once one "
                                 "has); null when a cost ahead is unknown or no worker is "
                                 "connected.")
    done_s: float | None = Field(description="Seconds until its last shard ends: the wait and "
                                 "the run (the merge not included); null when unknown.")

    @classmethod
    def of(cls, spot: QueueSpot | None) -> QueueOut | None:
        return None if spot is None else cls(position=spot.position,
                                             shards_ahead=spot.shards_ahead,
                                             wait_s=spot.wait_s, done_s=spot.done_s)


class Timings(BaseModel):
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queued_s: float | None = Field(description="Seconds from submission to the first shard.")
    run_s: float | None = Field(description="Seconds from the first shard to the end.")


class ArtifactOut(BaseModel):
    name: str
    size: int
    sha256: str
    media_type: str
    url: str


class ShardOut(BaseModel):
    index: int
    start: int
    stop: int
    status: str
    fraction: float
    attempts: int


class JobOut(BaseModel):
    id: str
    kind: KindName
    status: JobStatus
    mode: Literal["sharded", "sequential"]
    progress: Progress
    queue: QueueOut | None = Field(None, description="A queued or running job's place in the "
                                   "queue and its wait; null otherwise.")
    spec: dict[str, Any]
    estimate: dict[str, Any] | None
    timings: Timings
    error: str | None
    summary: dict[str, Any] | None
    artifacts: list[ArtifactOut]
    shards: list[ShardOut]

    @classmethod
    def from_row(cls, job: Job, spot: QueueSpot | None = None) -> JobOut:
        """The job's answer; `spot`: where it stands in the queue (jobs/queue_wait.py), for a
        queued or running job."""
        created, started, finished = map(utc, (job.created_at, job.started_at, job.finished_at))
        spot = spot if job.status in (QUEUED, RUNNING) else None
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            mode=job.mode,
            progress=progress_of(job, spot),
            queue=QueueOut.of(spot),
            spec=job.spec,
            estimate=job.estimate,
            timings=Timings(
                created_at=created,
                started_at=started,
                finished_at=finished,
                queued_s=(started - created).total_seconds() if started else None,
                run_s=(finished - started).total_seconds() if started and finished else None,
            ),
            error=job.error,
            summary=job.summary,
            artifacts=[
                ArtifactOut(name=a.name, size=a.size, sha256=a.sha256, media_type=a.media_type,
                            url=f"/v1/jobs/{job.id}/artifacts/{a.name}")
                for a in job.artifacts
            ],
            shards=[
                ShardOut(index=s.index, start=s.start, stop=s.stop, status=s.status,
                         fraction=s.fraction, attempts=s.attempts)
                for s in job.shards
            ],
        )


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def queued_message(spot: QueueSpot | None, estimated_run: float | None) -> str:
    """`queued: 2nd in line, 3 shards ahead, starts in about 1.5 min, done in about 2.0 min`
    (what is unknown left out)."""
    parts = []
    if spot is not None and spot.position:
        ahead = spot.shards_ahead
        parts.append(f"{ordinal(spot.position)} in line, {ahead} shard{'s' * (ahead != 1)} "
                     "ahead")
    elif spot is not None:
        parts.append("sent to a worker")
    if spot is not None and spot.wait_s is not None:
        parts.append(f"starts in about {human_s(spot.wait_s)}")
    if spot is not None and spot.done_s is not None:
        parts.append(f"done in about {human_s(spot.done_s)}")
    elif estimated_run is not None:
        parts.append(f"estimated run {human_s(estimated_run)}")
    return "queued" + (": " + ", ".join(parts) if parts else "")


def progress_of(job: Job, spot: QueueSpot | None = None) -> Progress:
    """Work done over work planned (networks of a NAD job, directions of a probe job, poison
    indices of a poison job: their epochs), weighting each shard by its size; `spot`: where
    a queued job stands, for its message and its time left."""
    if job.status == SUCCEEDED:
        return Progress(fraction=1.0, message="succeeded")
    kind = KINDS.get(job.kind)
    unit = "items" if kind is None else getattr(kind, "unit_of", lambda _: kind.unit)(job.spec)
    total = sum(s.stop - s.start for s in job.shards) or 1
    done = sum((s.stop - s.start) * s.fraction for s in job.shards)
    fraction = min(done / total, 0.99)
    finished = sum(s.status == SUCCEEDED for s in job.shards)
    eta = eta_s(job, fraction)
    if job.status == QUEUED and spot is not None and spot.done_s is not None:
        eta = spot.done_s
    if job.status in TERMINAL:
        message = job.status
    elif job.status == QUEUED:
        message = queued_message(spot, eta_s(job, fraction))
    elif job.mode == SEQUENTIAL:
        message = f"running: {fraction:.0%} of at most {total} {unit}"
    elif finished == len(job.shards):
        message = "merging"
    else:
        message = (f"running: {finished}/{len(job.shards)} shards done, {fraction:.0%} of "
                   f"{total} {unit}")
    if job.status == RUNNING and eta is not None and finished < len(job.shards):
        message += f", about {human_s(eta)} left"
    return Progress(fraction=round(fraction, 4), message=message,
                    eta_s=None if eta is None else round(eta, 1))


MIN_FRACTION = 0.02  # below it, the rate so far says little: the estimate stands


def eta_s(job: Job, fraction: float) -> float | None:
    """Seconds left of a queued or running job: its progress rate since it started (once past
    MIN_FRACTION), else its estimated run time less the time it has run."""
    if job.status not in (QUEUED, RUNNING):
        return None
    run = (job.estimate or {}).get("run") or {}
    estimated = run.get("run_s")
    if job.status == QUEUED or job.started_at is None:
        return estimated
    elapsed = max((utcnow() - job.started_at).total_seconds(), 0.0)
    if fraction >= MIN_FRACTION:
        return elapsed * (1 - fraction) / fraction
    return None if estimated is None else max(estimated - elapsed, 0.0)
