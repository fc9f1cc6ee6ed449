"""Celery configuration from Settings; `worker.app` builds the worker's application with it
(with its task modules), the API and the CLI theirs (they only send).

The broker only carries "work on job X (shard k)"; the job row is the truth. Hence: no result
backend, late acks (a message is acknowledged after its work is recorded), prefetch 1, and a
message redelivered when its worker dies.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu import Exchange, Queue

from store.settings import Settings, get_settings

GPU_QUEUE, CPU_QUEUE = "gpu", "cpu"
# The catalog's own shards (jobs/dispatch.py): a worker that leaves it out keeps its cores
# for users' jobs (`nads serve` runs one such process beside the others, nads/service_commands).
CATALOG_QUEUE = "catalog"
# Validations of uploaded architectures: a lane of their own (worker/layout.py), which the
# workers that run shards do not take, so that an upload validates within a minute while
# every shard slot is busy, and slow validations never hold a shard slot.
VALIDATE_QUEUE = "validate"
USER_QUEUES = f"{GPU_QUEUE},{CPU_QUEUE}"
ALL_QUEUES = f"{USER_QUEUES},{CATALOG_QUEUE}"  # what a worker consumes by default

# Task names, shared with the API, which enqueues by name (it must not import worker.tasks).
RUN_SHARD = "nads.run_shard"
RUN_WHOLE = "nads.run_whole"
MERGE = "nads.merge"
RECONCILE = "nads.reconcile"
VALIDATE_ARCHITECTURE = "nads.validate_architecture"
# A torchvision builder's cost, counted on the validation lane (worker/architecture_cost.py)
COUNT_ARCHITECTURE = "nads.count_architecture"


# kombu's filesystem transport with messages read in send order (jobs/ordered_filesystem.py)
ORDERED_FILESYSTEM = "jobs.ordered_filesystem:Transport"


def is_filesystem(settings: Settings) -> bool:
    return settings.resolved_broker_url.startswith("filesystem")


def broker_transport_options(settings: Settings) -> dict:
    if is_filesystem(settings):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "sequence_file": str(folder / "sequence"),
            "store_processed": False,
            "polling_interval": 0.2,
        }
    # Redis: an unacknowledged message is redelivered after this many seconds.
    return {"visibility_timeout": settings.task_time_limit_s + 600}


def make_celery(settings: Settings | None = None, include: Sequence[str] = ()) -> Celery:
    """The application that sends (and, given the task modules in `include`, runs) tasks."""
    settings = settings or get_settings()
    app = Celery("nads", broker=settings.resolved_broker_url, include=list(include))
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_transport=ORDERED_FILESYSTEM if is_filesystem(settings) else None,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_queues=(
            Queue(GPU_QUEUE, Exchange(GPU_QUEUE), routing_key=GPU_QUEUE),
            Queue(CPU_QUEUE, Exchange(CPU_QUEUE), routing_key=CPU_QUEUE),
            Queue(CATALOG_QUEUE, Exchange(CATALOG_QUEUE), routing_key=CATALOG_QUEUE),
            Queue(VALIDATE_QUEUE, Exchange(VALIDATE_QUEUE), routing_key=VALIDATE_QUEUE),
        ),
        task_default_queue=CPU_QUEUE,
        task_routes={
            RUN_SHARD: {"queue": GPU_QUEUE, "routing_key": GPU_QUEUE},
            RUN_WHOLE: {"queue": GPU_QUEUE, "routing_key": GPU_QUEUE},
            MERGE: {"queue": CPU_QUEUE, "routing_key": CPU_QUEUE},
            RECONCILE: {"queue": CPU_QUEUE, "routing_key": CPU_QUEUE},
            VALIDATE_ARCHITECTURE: {"queue": VALIDATE_QUEUE, "routing_key": VALIDATE_QUEUE},
            COUNT_ARCHITECTURE: {"queue": VALIDATE_QUEUE, "routing_key": VALIDATE_QUEUE},
        },
        beat_schedule={
            "reconcile": {"task": RECONCILE, "schedule": settings.reconcile_interval_s},
        },
        worker_hijack_root_logger=False,
    )
    return app

