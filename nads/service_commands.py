"""`nads serve` (API + supervised worker, embedded defaults) and `nads admin ...`.

Nothing here imports torch at import time: the API process and `nads admin` stay light.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nads.data_dir import DataDirRefused, prepare_data_dir, private_dirs
from nads.gc_command import gc_command
from nads.local_key import LOCAL_KEY_FILE, read_key_file, write_key_file

if TYPE_CHECKING:  # imported lazily at run time: `nads --help` stays fast
    import uvicorn
    from fastapi import FastAPI

    from store.settings import Settings

LOCAL_USER = "local"
KEEP_ALIVE_S = 75  # as Dockerfile.api's uvicorn


def stop_process(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM to a child that still runs, SIGKILL if it has not exited `timeout_s` later;
    its exit status (negative: killed by that signal)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def register(app: typer.Typer) -> None:
    app.command("serve", help="Start the API and a worker (embedded defaults: no "
                "server needed).")(serve_command)
    admin = typer.Typer(help="Administration of the service.", no_args_is_help=True)
    admin.command("create-key", help="Create an API key (printed as the last word).")(
        create_key_command)
    admin.command("migrate", help="Bring the database schema up to date.")(migrate_command)
    admin.command("gc", help="Remove the blobs nothing references (after the grace "
                  "period); prints what it did.")(gc_command)
    app.add_typer(admin, name="admin")


def _settings(data_dir: Path | None = None) -> Settings:
    from store.settings import get_settings

    if data_dir is not None:
        os.environ["NADS_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    try:  # umask 077: the workers started later inherit it
        notes = prepare_data_dir(settings.data_dir, private_dirs(settings))
    except DataDirRefused as exc:
        print(f"nads: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for note in notes:
        print(f"nads: {note}", file=sys.stderr, flush=True)
    return settings


def migrate_command() -> None:
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    print("database schema is up to date")


def create_key_command(
    name: Annotated[str, typer.Option(help="User the key belongs to.")],
) -> None:
    from store.auth import ReservedUserError, create_key
    from store.db import session_scope
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    try:
        with session_scope(settings.resolved_database_url) as session:
            key = create_key(session, name, key_name="cli")
    except ReservedUserError as exc:
        raise typer.BadParameter(str(exc), param_hint="--name") from None
    print(f"created API key for {name}: {key}")


def _local_key(settings: Settings) -> str:
    """The key printed by `nads serve`, kept (0600) in the data dir so restarts reuse it."""
    from store.auth import create_key, user_for_key
    from store.db import session_scope

    path = settings.data_dir / LOCAL_KEY_FILE  # where the client looks (nads/local_key.py)
    with session_scope(settings.resolved_database_url) as session:
        key = read_key_file(path)  # never one another local user planted
        if key is not None and user_for_key(session, key) is not None:
            return key
        key = create_key(session, LOCAL_USER, key_name="serve")
    write_key_file(path, key)
    return key


def _autobuild_catalog(settings: Settings) -> str:
    """Installs the catalog entries shipped with the repository (ready at once, nothing to
    compute), then starts (or resumes) the builds named by NADS_CATALOG_AUTOBUILD that are not
    ready; returns the names still building ('' for none)."""
    from jobs.broker import make_celery
    from jobs.catalog import CatalogError, build, parse_names
    from jobs.shipped import install_shipped
    from store.db import session_scope

    try:
        names = parse_names(settings.catalog_autobuild)
        with session_scope(settings.resolved_database_url) as session:
            shipped = install_shipped(session, settings)
            done = build(session, make_celery(settings), settings, names) if names else {}
    except CatalogError as exc:
        print(f"nads serve: NADS_CATALOG_AUTOBUILD: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    for name, what in shipped.items():
        if what.startswith("error"):
            print(f"nads serve: shipped catalog entry {name}: {what}", file=sys.stderr)
    served = [n for n, what in shipped.items() if not what.startswith(("error", "kept"))]
    if served:
        print(f"catalog: serving {', '.join(served)} as shipped "
              f"({settings.catalog_shipped_dir})", flush=True)
    return ", ".join(n for n, what in done.items() if not what.startswith("ready"))


class WorkerSupervisor:
    """Runs `celery worker` (with beat, for the reconciler) and restarts it when it dies.

    Started through worker/launch.py: on the CPU, one process per core of its share with one
    intra-op thread each (worker/layout.py). `nads serve` runs one per entry of
    `worker.layout.embedded_workers`: the validation lane (one process, validations only),
    and on 2 cores or more a users-only worker on one core beside one that also takes the
    catalog's shards.
    """

    def __init__(self, settings: Settings, env: dict[str, str] | None = None,
                 queues: str | None = None, cores: int | None = None, beat: bool = True,
                 name: str = "embedded") -> None:
        from jobs.broker import ALL_QUEUES, VALIDATE_QUEUE
        from worker.layout import VALIDATION_PROCESSES

        self.log_path = settings.data_dir / "worker.log"
        self.env = env  # None: this process's environment (where NADS_* already are)
        self.restarts = 0
        share = ["--cores", str(cores)] if cores else []
        if queues == VALIDATE_QUEUE:  # one process whatever NADS_WORKER_PROCESSES says
            share += ["--concurrency", str(VALIDATION_PROCESSES)]
        # one node name per data directory: a restarted `nads serve` takes back at once the
        # shards its previous run left running (worker/heartbeat.py reclaim_own)
        instance = hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:8]
        self.command = [sys.executable, "-m", "worker.launch", *share, "-Q",
                        queues or ALL_QUEUES, "--loglevel", "INFO",
                        "-n", f"{name}-{instance}@%h"]
        if beat:
            schedule = settings.data_dir / "celerybeat-schedule"
            self.command += ["-B", "--schedule", str(schedule)]
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"supervisor-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command, stdout=log, stderr=log,
                                                env=self.env, start_new_session=True)
                code = self.process.wait()
            self._kill_group()  # its pool children and beat, which outlive a killed worker
            if self.stopping.is_set():
                return
            self.restarts += 1
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 60)
            print(f"worker exited with {code}; restarting in {backoff:.0f} s "
                  f"(log: {self.log_path})", file=sys.stderr, flush=True)
            self.stopping.wait(backoff)

    def _kill_group(self) -> None:
        """SIGKILL to the worker's whole process group (its own session: start_new_session)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (a warm shutdown: running tasks finish or are handed back), then whatever
        of its process group is left after 15 s is killed."""
        self.stopping.set()
        if self.process is not None:
            stop_process(self.process, 15)
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self._kill_group()


def _server(app: FastAPI, settings: Settings, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server that, on SIGINT/SIGTERM, shuts down and returns (uvicorn re-raises the
    signal by default, which would kill this process before it stops the worker), with the
    request-header deadline (`api.serving`, NADS_HEADER_TIMEOUT_S)."""
    import uvicorn

    from api.serving import server_config

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    # Keep-alive past uvicorn's 5 s: a polling client's next request otherwise races the
    # server closing the idle connection ("Server disconnected" in the load test).
    return Server(server_config(app, settings, host=host, port=port, log_level="warning",
                                timeout_keep_alive=KEEP_ALIVE_S))


def _supervisors(settings: Settings) -> list[WorkerSupervisor]:
    """The embedded workers, the last one with beat (worker.layout.embedded_workers)."""
    from jobs.broker import USER_QUEUES, VALIDATE_QUEUE
    from nadcore.cores import usable_cores
    from worker.layout import embedded_workers

    workers = embedded_workers(usable_cores(), settings.worker_processes)
    names = {VALIDATE_QUEUE: "embedded-validate", USER_QUEUES: "embedded-users"}
    return [WorkerSupervisor(settings, queues=queues, cores=cores, beat=i == len(workers) - 1,
                             name=names.get(queues, "embedded"))
            for i, (queues, cores) in enumerate(workers)]


def _expected_cpu_processes(settings: Settings) -> int:
    """The processes of the embedded workers that take users' shards (the validation lane's
    aside), for admission before they connect (jobs/fleet.py `expected_workers`); 0 on a
    machine with NVIDIA devices, whose workers would be GPU processes (counting them as CPU
    ones would refuse what they run)."""
    from jobs.broker import VALIDATE_QUEUE
    from nadcore.cores import usable_cores
    from worker.layout import embedded_workers, has_nvidia_gpus

    if has_nvidia_gpus():
        return 0
    cores = usable_cores()
    return sum(share if share is not None else settings.worker_processes or cores
               for queues, share in embedded_workers(cores, settings.worker_processes)
               if queues != VALIDATE_QUEUE)


def serve_command(
    host: str = "127.0.0.1",
    port: int = 8000,
    data_dir: Annotated[Path | None, typer.Option(
        help="Where embedded state lives (default $NADS_DATA_DIR or ./var).")] = None,
    no_worker: Annotated[bool, typer.Option(
        "--no-worker", help="Run the API only (workers run elsewhere).")] = False,
) -> None:

    from api.main import create_app
    from store.migrate import upgrade

    settings = _settings(data_dir)
    upgrade(settings.resolved_database_url)
    key = _local_key(settings)
    building = _autobuild_catalog(settings)
    supervisors = [] if no_worker else _supervisors(settings)
    if supervisors and not settings.expected_cpu_processes:
        settings = settings.model_copy(
            update={"expected_cpu_processes": _expected_cpu_processes(settings)})
    for supervisor in supervisors:
        supervisor.start()
    app = create_app(settings)
    app.state.local_key = key  # GET /v1/local-proof: proves it to the client (nads/local_key.py)
    server = _server(app, settings, host, port)

    def banner() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.1)
        if server.started:
            url = f"http://{host}:{port}"
            worker = f"worker log: {supervisors[0].log_path}" if supervisors else "no worker"
            data = settings.data_dir.resolve()
            if building:
                print(f"catalog: building {building} in the background "
                      f"({url}/v1/catalog)", flush=True)
            if supervisors and shutil.which("bwrap") is None:
                print("uploaded architectures: disabled, bubblewrap (bwrap) is not installed "
                      "(the sandbox they run in; see docs/service.md)", flush=True)
            print(f"NADs service at {url} (docs: {url}/docs; data: {data}; {worker})\n"
                  f"the CLI and nads.client send this key to a local URL when NADS_KEY is "
                  f"unset (run them here, or set NADS_DATA_DIR={data})\n"
                  f"local API key: {key}", flush=True)

    threading.Thread(target=banner, daemon=True).start()
    try:
        server.run()
    finally:  # all at once: each waits for its running tasks (warm shutdown)
        stopping = [threading.Thread(target=s.stop) for s in supervisors]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
