"""The worker's Celery application: `python -m worker.launch -Q gpu,cpu` (worker/launch.py
starts `celery -A worker.app worker` with the node's layout).

Importing this module reads the settings (and prepares the embedded broker folder); the API
builds its own application with `jobs.broker.make_celery(settings)` instead.
"""

from celery.signals import (
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from jobs.broker import make_celery
from jobs.ordered_filesystem import stop_waiting
from worker.layout import pin_gpu

app = make_celery(include=["worker.tasks", "worker.architecture_validation",
                           "worker.architecture_cost"])
worker_process_init.connect(pin_gpu, weak=False)


def _refuse_root_sandbox(**_: object) -> None:
    """A worker running as root starts only if its sandbox can run as an unprivileged user
    (worker/sandbox.py); SystemExit, not an exception, so that Celery stops rather than logs."""
    from worker.sandbox import startup_problem

    problem = startup_problem()
    if problem is not None:
        raise SystemExit(f"worker: {problem}")


def _log_sandbox_bounds(**_: object) -> None:
    """Says which bounds hold on the sandbox's memory (a cgroup per sandbox, or rlimits only);
    run before the pool forks, so that the cgroup node is made once (worker/sandbox_cgroup.py)."""
    import sys

    from worker.sandbox import bounds

    print(f"nads worker: sandbox bounds: {bounds()}", file=sys.stderr, flush=True)


def _freeze_imports(**_: object) -> None:
    """What the worker has imported by now (its tasks, torch: hundreds of thousands of
    objects) is left out of garbage collection from here on (gc.freeze), before the pool
    forks: no collection walks it again, in this process or in its children, whose copies of
    those pages then stay shared, nor does the worker's exit (about 1.3 s less CPU per worker
    over its start, calibration and stop on this machine)."""
    import gc

    gc.freeze()


worker_init.connect(_refuse_root_sandbox, weak=False)
worker_init.connect(_log_sandbox_bounds, weak=False)
worker_init.connect(_freeze_imports, weak=False)  # last: after what the others import
_heartbeats: list = []  # the worker's heartbeat thread (worker/heartbeat.py), once ready


def _on_ready(sender: object = None, **_: object) -> None:
    """The worker's heartbeat starts, its calibration if it runs shards, and the shards its
    previous run left are sent again."""
    from jobs.dispatch import dispatch_pending, dispatch_validations
    from store.db import session_scope
    from store.settings import get_settings
    from worker.calibrate import calibrates, start_calibration
    from worker.heartbeat import reclaim_own, start_worker_heartbeat

    settings = get_settings()
    name = getattr(sender, "hostname", None) or "worker"
    info = _describe(sender)
    _heartbeats.append(start_worker_heartbeat(settings, name, info))
    if calibrates(info["queues"].split(",")):
        start_calibration(settings, name)
    with session_scope(settings.resolved_database_url) as session:
        reclaim_own(session, app, name)
        dispatch_pending(app, session, settings)  # this worker's processes are new slots
        dispatch_validations(app, session, settings)


def _describe(sender: object) -> dict:
    """Processes, queues and GPUs of this worker, for its row (jobs/fleet.py)."""
    import os

    from worker.layout import GPUS_VARIABLE

    selected = getattr(sender, "app", app).amqp.queues  # sender: the worker's Consumer
    queues = sorted(selected.consume_from or selected)
    controller = getattr(sender, "controller", sender)
    return {"processes": int(getattr(controller, "concurrency", 1) or 1),
            "queues": ",".join(queues)[:200],
            "gpus": int(os.environ.get(GPUS_VARIABLE, "0") or 0)}


def _on_shutdown(**_: object) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()


worker_ready.connect(_on_ready, weak=False)
worker_shutdown.connect(_on_shutdown, weak=False)


def _stop_waiting(**_: object) -> None:
    """On SIGTERM/SIGINT/SIGQUIT: the embedded broker's wait for a message ends now, so the
    warm shutdown begins at once (jobs/ordered_filesystem.py; Redis needs nothing)."""
    stop_waiting()


worker_shutting_down.connect(_stop_waiting, weak=False)
