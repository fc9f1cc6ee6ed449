"""`nads serve` (API + supervised worker, embedded defaults) and `nads admin ...`.

Nothing here imports torch at import time: the API process and `nads admin` stay light.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported lazily at run time: `nads --help` stays fast
    import uvicorn
    from fastapi import FastAPI

    from store.settings import Settings

LOCAL_USER = "local"


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="start the API and a worker (embedded defaults: no server needed)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--data-dir", type=Path, default=None,
                       help="Where embedded state lives (default $NADS_DATA_DIR or ./var).")
    serve.add_argument("--no-worker", action="store_true",
                       help="Run the API only (workers run elsewhere).")
    serve.set_defaults(func=serve_command)

    admin = subparsers.add_parser("admin", help="administration of the service")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_sub.add_parser("create-key", help="create an API key (printed as the last word)")
    create.add_argument("--name", required=True, help="User the key belongs to.")
    create.set_defaults(func=create_key_command)
    migrate = admin_sub.add_parser("migrate", help="bring the database schema up to date")
    migrate.set_defaults(func=migrate_command)


def _settings(data_dir: Path | None = None) -> Settings:
    from store.settings import get_settings

    if data_dir is not None:
        os.environ["NADS_DATA_DIR"] = str(data_dir)
        get_settings.cache_clear()
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return settings


def migrate_command(args: argparse.Namespace) -> int:
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    print("database schema is up to date")
    return 0


def create_key_command(args: argparse.Namespace) -> int:
    from store.auth import create_key
    from store.db import session_scope
    from store.migrate import upgrade

    settings = _settings()
    upgrade(settings.resolved_database_url)
    with session_scope(settings.resolved_database_url) as session:
        key = create_key(session, args.name, key_name="cli")
    print(f"created API key for {args.name}: {key}")
    return 0


def _local_key(settings: Settings) -> str:
    """The key printed by `nads serve`, kept (0600) in the data dir so restarts reuse it."""
    from store.auth import create_key, user_for_key
    from store.db import session_scope

    path = settings.data_dir / "local-api-key"
    with session_scope(settings.resolved_database_url) as session:
        if path.is_file():
            key = path.read_text().strip()
            if user_for_key(session, key) is not None:
                return key
        key = create_key(session, LOCAL_USER, key_name="serve")
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


class WorkerSupervisor:
    """Runs `celery worker` (with beat, for the reconciler) and restarts it when it dies."""

    def __init__(self, settings: Settings) -> None:
        self.log_path = settings.data_dir / "worker.log"
        schedule = settings.data_dir / "celerybeat-schedule"
        self.command = [sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                        "-Q", "gpu,cpu", "--concurrency", "1", "--loglevel", "INFO",
                        "-n", f"embedded-{os.getpid()}@%h", "-B", "--schedule", str(schedule)]
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(self.command, stdout=log, stderr=log,
                                                start_new_session=True)
                code = self.process.wait()
            if self.stopping.is_set():
                return
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 60)
            print(f"worker exited with {code}; restarting in {backoff:.0f} s "
                  f"(log: {self.log_path})", file=sys.stderr, flush=True)
            self.stopping.wait(backoff)

    def stop(self) -> None:
        self.stopping.set()
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server that, on SIGINT/SIGTERM, shuts down and returns (uvicorn re-raises the
    signal by default, which would kill this process before it stops the worker)."""
    import uvicorn

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

    return Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))


def serve_command(args: argparse.Namespace) -> int:

    from api.main import create_app
    from store.migrate import upgrade

    settings = _settings(args.data_dir)
    upgrade(settings.resolved_database_url)
    key = _local_key(settings)
    supervisor = None if args.no_worker else WorkerSupervisor(settings)
    if supervisor is not None:
        supervisor.start()
    server = _server(create_app(settings), args.host, args.port)

    def banner() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.1)
        if server.started:
            url = f"http://{args.host}:{args.port}"
            worker = f"worker log: {supervisor.log_path}" if supervisor else "no worker"
            data = settings.data_dir.resolve()
            print(f"NADs service at {url} (docs: {url}/docs; data: {data}; {worker})\n"
                  f"local API key: {key}", flush=True)

    threading.Thread(target=banner, daemon=True).start()
    try:
        server.run()
    finally:
        if supervisor is not None:
            supervisor.stop()
    return 0
