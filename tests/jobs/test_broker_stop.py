"""A worker on the embedded broker stops waiting for messages as soon as it is asked to stop
(jobs/ordered_filesystem.py `stop_waiting`, called on Celery's `worker_shutting_down` by
worker/app.py): Celery's blocking loop for a polling transport otherwise sees a SIGTERM only
after two 2 s waits, and an idle `nads serve` took 4 s more to stop.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import filesystem

from jobs import ordered_filesystem
from jobs.broker import ORDERED_FILESYSTEM, broker_transport_options
from store.settings import Settings

QUEUE = Queue("stop", Exchange("stop"), routing_key="stop")


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """A broker folder of its own (kombu remembers bound queues per process: forgotten)."""
    filesystem.Transport.global_state.clear()
    yield Settings(data_dir=tmp_path, database_url=None, broker_url=None, blob_dir=None)
    filesystem.Transport.global_state.clear()


@pytest.fixture
def stopping(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """This test's own "the worker is stopping" flag, so that the process's stays unset."""
    event = threading.Event()
    monkeypatch.setattr(ordered_filesystem, "_stopping", event)
    return event


def connect(settings: Settings) -> Connection:
    return Connection("filesystem://", transport=ORDERED_FILESYSTEM,
                      transport_options=broker_transport_options(settings))


def send(settings: Settings, body: int) -> None:
    with connect(settings) as conn, conn.Producer() as producer:
        producer.publish(body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key,
                         declare=[QUEUE], serializer="json")


def test_a_wait_for_a_message_ends_within_a_poll_of_stop_waiting(
        settings: Settings, stopping: threading.Event) -> None:
    got: list[int] = []
    with connect(settings) as conn, conn.Consumer([QUEUE], accept=["json"],
                                                  callbacks=[lambda b, m: got.append(b)]):
        threading.Timer(0.3, ordered_filesystem.stop_waiting).start()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=10)
        took = time.monotonic() - started
    assert stopping.is_set()
    assert took < 3, f"the wait went on {took:.1f} s after stop_waiting"
    assert got == []


def test_no_message_is_taken_once_stopping_and_the_next_reader_gets_it(
        settings: Settings, stopping: threading.Event) -> None:
    send(settings, 7)
    got: list[int] = []

    def take(body: int, message: object) -> None:
        got.append(body)
        message.ack()

    ordered_filesystem.stop_waiting()
    with connect(settings) as conn, conn.Consumer([QUEUE], accept=["json"], callbacks=[take]):
        with pytest.raises(TimeoutError):
            conn.drain_events(timeout=1)
        assert got == []
        stopping.clear()  # another process, not stopping
        conn.drain_events(timeout=5)
    assert got == [7]


def test_the_worker_stops_waiting_when_celery_says_it_is_shutting_down(tmp_path: Path
                                                                      ) -> None:
    """worker/app.py connects `stop_waiting` to `worker_shutting_down`, which Celery sends from
    the worker's SIGTERM, SIGINT and SIGQUIT handlers (a process of its own: importing the
    worker's application reads the settings)."""
    code = ("import json; from celery.signals import worker_shutting_down; "
            "import worker.app; from jobs import ordered_filesystem as o; "
            "before = o._stopping.is_set(); "
            "worker_shutting_down.send(sender='w@h', sig='SIGTERM', how='Warm', exitcode=0); "
            "print(json.dumps([before, o._stopping.is_set()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"NADS_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         timeout=120, check=True).stdout
    assert json.loads(out.splitlines()[-1]) == [False, True]
