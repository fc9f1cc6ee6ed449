"""Table models (SQLAlchemy 2.0). The job row and its shard rows are the truth about a job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Job and shard states. Terminal states never change again.
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
JOB_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

# Job kinds.
NADS, PROBE, POISON = "nads", "probe", "poison"

# Upload kinds: an image dataset (.npz) or a NAD array (.npy).
DATASET_UPLOAD, NADS_UPLOAD = "dataset", "nads"

# How a NAD job is executed: shard tasks + a merge task, or one task (early stopping is sequential).
SHARDED, SEQUENTIAL = "sharded", "sequential"


def utcnow() -> datetime:
    """Naive UTC, stored the same way by SQLite and Postgres."""
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ApiKey(Base):
    """An API key, stored as its sha256 (the key itself is shown once, at creation)."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    user: Mapped[User] = relationship()


class Blob(Base):
    """A content-addressed file in the blob store. `touched_at`: when a writer last recorded it
    (store/blobs.py); the collector (store/blobgc.py) keeps it for a grace period after that."""

    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    touched_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Job(Base):
    __tablename__ = "jobs"

    # `pk` orders jobs (newest first) and pages through them; `id` is the public name.
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # The key it was submitted with (None for the catalog's own jobs): the rate is per key.
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_jobs_api_key_id_api_keys"),
        nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=QUEUED)
    mode: Mapped[str] = mapped_column(String(16), default=SHARDED)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    merge_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    shards: Mapped[list[Shard]] = relationship(
        back_populates="job", order_by="Shard.index", cascade="all, delete-orphan"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", order_by="Artifact.name", cascade="all, delete-orphan"
    )


class Shard(Base):
    """A range [start, stop) of network indices of a job. While it runs, `heartbeat_at` is
    renewed every few seconds by the process running it (`worker`), whatever its progress."""

    __tablename__ = "shards"
    __table_args__ = (UniqueConstraint("job_pk", "index", name="uq_shards_job_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    fraction: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    partial_sha256: Mapped[str | None] = mapped_column(
        ForeignKey("blobs.sha256"), nullable=True, index=True  # the blob collector's look-ups
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    job: Mapped[Job] = relationship(back_populates="shards")


class Worker(Base):
    """A Celery worker (node name) and when it last said it was alive; what it computes on
    (`device`, `gpus`), how many processes take which `queues`, and `throughput`: FLOP/s of
    one process by rate key (the job kind, bf16 jobs apart: jobs.fleet.rate_key), from the
    calibration at its start (key `calibration`) and then from its finished shards
    (jobs/fleet.py reads them to estimate a job's run time), whether its device computes bf16
    in hardware (`native_bf16`), the `datasets` it can read (a job naming another is refused at
    submission), and when it shut down (`stopped_at`)."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    device: Mapped[str | None] = mapped_column(String(200), nullable=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    processes: Mapped[int] = mapped_column(Integer, default=1)
    queues: Mapped[str | None] = mapped_column(String(200), nullable=True)
    throughput: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the named datasets it can read (nadcore.poison.datasets.readable_datasets), every heartbeat;
    # None: a row from before they were reported
    datasets: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # whether its device computes bfloat16 in hardware (nadcore.nads.precision.native_bf16, from
    # its calibration); None: not said (not calibrated yet, or a CPU that cannot be told)
    native_bf16: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    # when it shut down cleanly (worker/heartbeat.py): from then on it is not connected, however
    # recent `last_seen`; cleared by its next beat (a restart under the same name)
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Artifact(Base):
    """A named output of a job, pointing at an immutable blob."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_pk", "name", name="uq_artifacts_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.pk", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(100), default="application/octet-stream")

    job: Mapped[Job] = relationship(back_populates="artifacts")


class Upload(Base):
    """A file a user uploaded (a dataset .npz or a NAD .npy), stored as a blob."""

    __tablename__ = "uploads"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # the key it was sent with: uploads are rate-limited per key (api/ratelimit.py)
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_uploads_api_key_id_api_keys"),
        nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # {key: {"shape": [...], "dtype": "<f4"}} from the .npy headers, read at upload (store/npz.py)
    arrays: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class UploadAttempt(Base):
    """One upload or architecture request that passed the rate limit, stored or refused: the
    upload rate counts these (api/ratelimit.py), so a refused upload costs its sender as much
    as a stored one. A key's rows older than the rate's window are deleted as it sends more."""

    __tablename__ = "upload_attempts"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    api_key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"),
                                            index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Architecture states: validated in the worker, never in the API process.
VALIDATING, READY, REJECTED = "validating", "ready", "rejected"


class Architecture(Base):
    """A user's own architecture: a TorchScript archive or a torch.export program, stored as a
    blob, usable by every job kind once the worker has validated it (`status` = ready)."""

    __tablename__ = "architectures"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # the key it was sent with: uploads are rate-limited per key (api/ratelimit.py)
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL", name="fk_architectures_api_key_id_api_keys"),
        nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(100))
    filename: Mapped[str] = mapped_column(String(255))
    input_shape: Mapped[list[int]] = mapped_column(JSON)
    init: Mapped[str] = mapped_column(String(64), default="torch-default")
    # the element of a tuple, list or dict output that is the network's output (None: a tensor)
    output: Mapped[str | None] = mapped_column(String(100), nullable=True)
    format: Mapped[str | None] = mapped_column(String(16), nullable=True)  # torchscript|export
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=VALIDATING)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # What validation learned: outputs, parameters, FLOPs per forward pass, module types...
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # When its validation was sent to the lane; None while `validating`: held for a free slot
    # of the lane, sent fairly between users (jobs/dispatch.py, dispatch_validations)
    validation_sent_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


# Catalog entry states: building (rounds of NAD jobs running), ready, failed (re-run the build).
CATALOG_BUILDING, CATALOG_READY, CATALOG_FAILED = "building", "ready", "failed"
# Where a catalog entry's result comes from: shipped with the repository, or built here.
ORIGIN_SHIPPED, ORIGIN_BUILT = "shipped", "built"


class CatalogEntry(Base):
    """A precomputed NAD set of a built-in architecture, served publicly at /v1/catalog.

    It is built by ordinary sharded NAD jobs owned by the system user "catalog", in rounds of
    growing network counts (jobs/catalog.py); `job_pk` is the current (or final) round's job.
    """

    __tablename__ = "catalog"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default=CATALOG_BUILDING)
    # The target spec: the paper's settings with num_networks = the cap (10,000).
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    target_stability: Mapped[float] = mapped_column(Float)
    stability_k: Mapped[int] = mapped_column(Integer)
    round_networks: Mapped[int] = mapped_column(Integer)  # networks added per round
    shard_networks: Mapped[int] = mapped_column(Integer)  # networks per shard
    job_pk: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.pk", ondelete="SET NULL"), nullable=True
    )
    rounds: Mapped[int] = mapped_column(Integer, default=0)
    networks: Mapped[int | None] = mapped_column(Integer, nullable=True)  # used by the result
    stability: Mapped[float | None] = mapped_column(Float, nullable=True)  # at stability_k
    stopped_early: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # of nads.npy
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    built_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # "built" by this service's round jobs, or "shipped" with the repository (catalog_data/,
    # jobs/shipped.py): then `files` maps each file name to its blob's sha256 and
    # `provenance` is the shipped provenance.json; `job_pk` is NULL.
    origin: Mapped[str] = mapped_column(String(16), default="built", server_default="built")
    files: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    job: Mapped[Job | None] = relationship()


class ArchitectureCost(Base):
    """One forward pass of a torchvision builder at an input shape and output count, counted
    once by a worker on torch's meta device (worker/architecture_cost.py,
    nadcore.networks.counting):
    the admission of its jobs reads it as the built-ins' walkers (jobs/architecture_costs.py).
    `error`: the builder cannot take the shape (its jobs are refused naming `input_shape`)."""

    __tablename__ = "architecture_costs"
    __table_args__ = (UniqueConstraint("architecture", "input_shape", "num_outputs",
                                       name="uq_architecture_costs_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    architecture: Mapped[str] = mapped_column(String(100))
    input_shape: Mapped[str] = mapped_column(String(64))  # "3x224x224"
    num_outputs: Mapped[int] = mapped_column(Integer)
    macs: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    activations: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    counted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
