"""The one configuration class of the service, read from `NADS_*` environment variables.

With no variable set, everything is embedded under `NADS_DATA_DIR` (default `./var`): a SQLite
database, kombu's filesystem broker and a blob directory. Production only changes the URLs.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The repository's shipped catalog entries (jobs/shipped.py), next to the packages.
SHIPPED_CATALOG_DIR = Path(__file__).resolve().parents[1] / "catalog_data"


class Settings(BaseSettings):
    # extra: the quotas the job kinds declare (`quota`), given to the constructor by name
    model_config = SettingsConfigDict(env_prefix="NADS_", extra="allow")

    data_dir: Path = Field(Path("var"), description="Root of the embedded defaults.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite.")
    broker_url: str | None = Field(None, description="Celery broker; default filesystem://.")
    blob_dir: Path | None = Field(None, description="Content-addressed blob store directory.")
    blob_url: str | None = Field(
        None, description="s3://bucket/prefix: blobs in an S3-compatible bucket shared by every "
        "node (store/blobs_s3.py; endpoint and credentials from the AWS_* variables); "
        "NADS_BLOB_DIR then holds only this node's staging and read-through cache.",
    )

    max_upload_bytes: int = Field(
        200_000_000, ge=1, description="Largest accepted upload (.npz dataset, .npy NADs)."
    )
    max_dataset_decompressed_bytes: int = Field(
        2**30, ge=1, description="Largest dataset upload once decompressed: the arrays' sizes "
        "as their .npy headers in the .npz declare them (413 past it)."
    )
    # Uploaded architectures (POST /v1/architectures), validated in a child of the worker.
    max_architecture_bytes: int = Field(
        50_000_000, ge=1, description="Largest accepted architecture archive (.pt, .pt2)."
    )
    # DenseNet-121 (1x32x32, .pt2) validates in 27 s on a quiet Zen 1 core, and took over 60 s
    # (the old default: rejected) under the test suite's load there (BENCHMARKS.md)
    architecture_validation_timeout_s: float = Field(
        180.0, gt=0, description="Wall time of one architecture validation (child killed past it)."
    )
    architecture_validation_memory_bytes: int = Field(
        2 * 2**30, ge=2**28,
        description="Memory (RLIMIT_DATA: heap and anonymous mappings; and the sandbox's cgroup "
        "limit, shared memory included, where the worker can make one) of the validation child.",
    )
    # The sandbox in which uploaded models run (worker/sandbox.py), for jobs; validation uses
    # the two settings above.
    sandbox_memory_bytes: int = Field(
        8 * 2**30, ge=2**28,
        description="Memory (RLIMIT_DATA; RLIMIT_AS is this plus 4 GiB of libraries on a CPU "
        "worker; and the sandbox's cgroup limit, shared memory included, where the worker can "
        "make one) of the sandbox that runs one shard of a job on an uploaded architecture.",
    )
    sandbox_scratch_bytes: int = Field(
        256 * 2**20, ge=2**20, description="Size of the sandbox's private /tmp (and largest file)."
    )
    sandbox_user: str = Field(
        "nads-sandbox", min_length=1,
        description="The unprivileged host user that a worker running as root starts the "
        "sandbox as (scripts/install.sh creates it); a root worker refuses to start without it. "
        "A non-root worker's sandbox runs as the worker's own user.",
    )
    unsafe_skip_archive_checks: bool = Field(
        False, description="TESTS ONLY: load uploaded archives without "
        "nadcore.uploaded.untrusted's checks, so that tests can show the sandbox alone "
        "contains a hostile model.",
    )
    max_body_bytes: int = Field(
        32 * 2**20, ge=1,
        description="Largest request body outside the streamed uploads (413). The largest "
        "legitimate one is a spec with an eval_point of 786,432 floats (~16 MB of JSON).",
    )
    header_timeout_s: float = Field(
        15.0, gt=0, description="Seconds a request's headers may take to arrive (api/serving.py); "
        "past it the connection gets a 408 and is closed."
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token of GET /metrics (service-wide figures, for the operator's "
        "Prometheus); unset: /metrics is 403."
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest request line and headers of one request "
        "(api/serving.py); past it the connection gets a 431 and is closed."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for the next piece of a request body, and the "
        "allowance before NADS_BODY_MIN_RATE_BYTES_S counts (api/serving.py; 408 past it)."
    )
    body_min_rate_bytes_s: int = Field(
        16 * 1024, ge=1, description="Slowest average rate of a request body after the first "
        "NADS_BODY_TIMEOUT_S: each this many bytes buy one more second (408 past it). 16 KiB/s "
        "lets a 200 MB upload take 3.4 h."
    )
    submit_rate_per_minute: int = Field(
        60, ge=0, description="Jobs one API key may submit in any 60 s (429 past it; 0 = no limit)."
    )
    upload_rate_per_minute: int = Field(
        20, ge=0, description="Uploads and architectures (each a validation) one API key may "
        "send in any 60 s (429 past it; 0 = no limit)."
    )
    # Storage per user (api/storage.py, store/usage.py): the sizes of the user's uploads,
    # architectures and jobs' stored results. 10 GiB is 50 uploads at the largest size, or a
    # few dozen CIFAR-sized NAD jobs; 0 = no limit.
    max_storage_bytes_per_user: int = Field(
        10 * 2**30, ge=0, description="Bytes one user's uploads, architectures and job results "
        "may occupy (507 past it; delete some to free space; 0 = no limit)."
    )
    # The blob collector (store/blobgc.py), run by the worker's reconciler and `nads admin gc`.
    blob_gc_grace_s: float = Field(
        3600.0, ge=0, description="A blob nothing references is removed once it has been "
        "untouched this long (a writer records a blob before it references it)."
    )
    blob_gc_interval_s: float = Field(
        600.0, ge=0, description="Seconds between two collections by the reconciler (0: never; "
        "`nads admin gc` still collects)."
    )
    datasets_dir: Path | None = Field(
        None, description="Worker-side datasets (cifar10 in torchvision's on-disk format)."
    )

    # The public NAD catalog (jobs/catalog.py): the paper's settings, built in rounds of
    # sharded NAD jobs until split-half stability reaches the target or the cap is used up.
    catalog_autobuild: str = Field(
        "logreg,lenet",
        description="Architectures `nads serve` starts building at first start ('' for none).",
    )
    catalog_networks: int = Field(10_000, ge=2, description="Cap on networks (paper: 10,000).")
    catalog_target_stability: float = Field(0.95, gt=0, le=1)
    catalog_stability_k: int = Field(64, ge=1)
    catalog_round_networks: int = Field(
        2_000, ge=2, description="Networks added per round (stability is checked between)."
    )
    catalog_shard_networks: int = Field(500, ge=1, description="Networks per shard.")
    catalog_shipped_dir: Path | None = Field(
        SHIPPED_CATALOG_DIR,
        description="Catalog entries shipped with the repository (catalog_data/), installed "
        "as ready by `nads serve` and `nads catalog install` (jobs/shipped.py); '' for none.",
    )

    @field_validator("blob_url", mode="before")
    @classmethod
    def _blob_url(cls, v: object) -> object:
        if v in ("", None):
            return None
        if not isinstance(v, str) or not v.startswith("s3://") or len(v) <= 5 or v[5] == "/":
            raise ValueError(f"blob_url: {v!r} is not s3://bucket or s3://bucket/prefix")
        return v

    @field_validator("catalog_shipped_dir", mode="before")
    @classmethod
    def _no_shipped_dir(cls, v: object) -> object:
        return None if v == "" else v

    # Run-time estimates from the connected workers (jobs/fleet.py) and fair dispatch.
    architecture_count_wait_s: float = Field(
        30.0, ge=0, description="How long a submission waits for a worker to count the cost of "
        "a torchvision builder at a new input shape (once per builder, shape and output count, "
        "on the validation lane); past it the API answers 503 with Retry-After."
    )
    max_estimated_run_s: float = Field(
        3600.0, ge=0, description="A job whose estimated run time on the connected workers "
        "exceeds this is refused (422 with the estimate and what would fit) unless submitted "
        "with accept_long=true; 0 = no limit. Nothing is refused while no worker is connected "
        "(unless NADS_EXPECTED_CPU_PROCESSES says which will)."
    )
    expected_cpu_processes: int = Field(
        0, ge=0, description="CPU processes taking users' shards that this deployment starts "
        "(`nads serve` sets it to its own): until the first worker connects, run estimates "
        "count these at the rate assumed for a CPU (jobs/fleet.py), so a fresh service refuses "
        "too-long jobs from its first second; 0: unknown, nothing refused until one connects. "
        "Leave it 0 for a GPU fleet (a CPU estimate would refuse what a GPU runs)."
    )
    preempt_after_s: float = Field(
        60.0, ge=0, description="While a user with held shards has fewer in flight than their "
        "fair share (the slots divided between the users with work), a shard of a user over "
        "their share that has run this long is stopped and held again, to run later from its "
        "start (jobs/dispatch.py); 0: never preempt (the fair order alone)."
    )
    uploaded_budget_floor_s: float = Field(
        300.0, ge=1, description="Least wall time of a shard on an uploaded architecture; its "
        "budget is the larger of this and NADS_UPLOADED_BUDGET_FACTOR x its estimate "
        "(jobs/budget.py), past which its sandbox is killed and the job fails naming both."
    )
    uploaded_budget_factor: float = Field(
        10.0, ge=1, description="A shard on an uploaded architecture may run this many times "
        "its estimated seconds (FLOPs at this worker's measured rate, or validation's measured "
        "seconds per input at job batch sizes, whichever is longer) before it is killed."
    )
    dispatch_slots: int = Field(
        0, ge=0, description="Shards of users' jobs sent to the broker at once (the rest wait "
        "in the database and go out as shards finish, the user with the fewest in flight "
        "first: jobs/dispatch.py); 0: the connected workers' processes that take users' work."
    )

    # Worker behaviour.
    task_soft_time_limit_s: int = Field(6 * 3600, ge=1)
    task_time_limit_s: int = Field(6 * 3600 + 300, ge=1)
    progress_interval_s: float = Field(1.0, ge=0, description="Min. seconds between DB writes.")
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="Period of the reconciler (a scan of the unfinished jobs)."
    )
    heartbeat_interval_s: float = Field(
        5.0, gt=0, description="How often a worker, and the process running a shard, say "
        "they are alive (worker/heartbeat.py)."
    )
    heartbeat_timeout_s: float = Field(
        30.0, gt=0, description="A running shard whose heartbeat is this old is sent again."
    )
    stale_after_s: float = Field(
        900.0, ge=0, description="A queued shard (or one that never beat) untouched this long "
        "is sent again."
    )
    task_max_retries: int = Field(5, ge=0, description="Retries of a transient error.")
    max_attempts: int = Field(3, ge=1, description="Runs of one shard before the job fails.")
    worker_processes: int = Field(
        0, ge=0, description="Processes per worker: 0 is one per usable core on the CPU (one "
        "intra-op thread each), one per GPU where there are GPUs (worker/layout.py)."
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'nads.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def resolved_datasets_dir(self) -> Path:
        return (self.datasets_dir or self.data_dir / "datasets").resolve()

    @property
    def broker_folder(self) -> Path:
        """Where kombu's filesystem transport keeps messages (embedded mode only)."""
        return (self.data_dir / "broker").resolve()

    def quota(self, name: str, default: int | float) -> int | float:
        """A quota a job kind declares (`jobs.kinds.base.Quota`: a limit on its cost estimate,
        0 = none), read like a field: given to the constructor, else NADS_<NAME> in the
        environment, else `default`; of the default's type and >= 0 (ValueError naming the
        variable otherwise)."""
        given = (self.model_extra or {}).get(name)
        if given is None:
            given = os.environ.get(f"NADS_{name.upper()}")
        if given is None:
            return default
        try:
            return TypeAdapter(Annotated[type(default), Field(ge=0)]).validate_python(given)
        except ValidationError as exc:
            raise ValueError(f"NADS_{name.upper()}: {exc.errors()[0]['msg']}") from None


@lru_cache
def get_settings() -> Settings:
    return Settings()
