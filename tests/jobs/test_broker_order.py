"""The embedded broker reads messages in the order they were sent (jobs/ordered_filesystem.py),
across the power of ten that kombu's own filesystem transport trips over, across a reboot with
messages left in the folder, and with several processes sending at once.

Real kombu producers and consumers on the folders `nads serve` uses (jobs/broker.py); the only
thing replaced is the clock kombu's transport reads (`monotonic`), to put it where the machine's
would be 16.7 minutes after boot, or after a reboot. The stock transport runs the same steps and
is shown to misorder them: the bug reported upstream (docs/service.md, "Embedded broker").
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kombu import Connection, Exchange, Queue
from kombu.transport import filesystem

from jobs.broker import ORDERED_FILESYSTEM, broker_transport_options, make_celery
from store.settings import Settings

STOCK = "kombu.transport.filesystem:Transport"
QUEUE = Queue("order", Exchange("order"), routing_key="order")


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """A broker folder of its own. kombu's filesystem transport remembers in the process which
    queues it has bound (and then skips writing the binding into a new folder's control
    files): forgotten before and after, as a new process would."""
    filesystem.Transport.global_state.clear()
    yield Settings(data_dir=tmp_path, database_url=None, broker_url=None, blob_dir=None)
    filesystem.Transport.global_state.clear()


class Clock:
    """What kombu's filesystem transport reads as `monotonic()`: set by the test, one
    millisecond further on each read."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self) -> float:
        self.seconds += 0.001
        return self.seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock(0.0)
    monkeypatch.setattr(filesystem, "monotonic", fake)
    return fake


def connect(settings: Settings, transport: str) -> Connection:
    return Connection("filesystem://", transport=transport,
                      transport_options=broker_transport_options(settings))


def send(settings: Settings, transport: str, bodies: list[int]) -> None:
    with connect(settings, transport) as conn, conn.Producer() as producer:
        for body in bodies:
            producer.publish(body, exchange=QUEUE.exchange, routing_key=QUEUE.routing_key,
                             declare=[QUEUE], serializer="json")


def receive(settings: Settings, transport: str, count: int) -> list[int]:
    got: list[int] = []

    def take(body: int, message: object) -> None:
        got.append(body)
        message.ack()

    with connect(settings, transport) as conn, \
            conn.Consumer([QUEUE], accept=["json"], callbacks=[take]):
        while len(got) < count:
            conn.drain_events(timeout=5)
    return got


Scenario = Callable[[Settings, str, Clock], list[int]]


def across_the_power_of_ten(settings: Settings, transport: str, clock: Clock) -> list[int]:
    """Ten messages sent as the monotonic clock passes 1,000,000 ms (16.7 minutes after
    boot), read after."""
    clock.seconds = 999.995
    send(settings, transport, list(range(10)))
    return receive(settings, transport, 10)


def across_a_reboot(settings: Settings, transport: str, clock: Clock) -> list[int]:
    """Five messages sent after 2 hours of uptime stay in the folder; the machine reboots
    (the clock starts again near zero, a new process sends) and five more are sent."""
    clock.seconds = 2 * 3600.0
    send(settings, transport, list(range(5)))
    clock.seconds = 20.0
    send(settings, transport, list(range(5, 10)))
    return receive(settings, transport, 10)


SCENARIOS = [across_the_power_of_ten, across_a_reboot]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_the_embedded_broker_reads_in_send_order(settings: Settings, clock: Clock,
                                                 scenario: Scenario) -> None:
    assert scenario(settings, ORDERED_FILESYSTEM, clock) == list(range(10))


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_kombus_own_transport_does_not(settings: Settings, clock: Clock,
                                       scenario: Scenario) -> None:
    """The upstream bug, as reported (docs/service.md): when this fails, kombu has fixed it and
    jobs/ordered_filesystem.py can go."""
    got = scenario(settings, STOCK, clock)
    assert sorted(got) == list(range(10))
    assert got != list(range(10))


def test_messages_left_by_kombus_own_transport_are_read_first(settings: Settings,
                                                              clock: Clock) -> None:
    """An upgrade with messages in the folder: those kombu named are older than any this
    transport names, and are read first, in their own order."""
    clock.seconds = 50.0
    send(settings, STOCK, [0, 1, 2])
    send(settings, ORDERED_FILESYSTEM, [3, 4, 5])
    assert receive(settings, ORDERED_FILESYSTEM, 6) == list(range(6))


def test_a_lost_sequence_file_restarts_after_the_messages_left(settings: Settings) -> None:
    send(settings, ORDERED_FILESYSTEM, [0, 1, 2])
    (settings.broker_folder / "sequence").unlink()
    send(settings, ORDERED_FILESYSTEM, [3, 4])
    assert receive(settings, ORDERED_FILESYSTEM, 5) == list(range(5))


SENDER = """
import json, sys
from kombu import Connection, Exchange, Queue
from jobs.ordered_filesystem import Transport
options, sender, count = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
queue = Queue("order", Exchange("order"), routing_key="order")
with Connection("filesystem://", transport=Transport, transport_options=options) as conn, \\
        conn.Producer() as producer:
    for i in range(count):
        producer.publish([sender, i], exchange=queue.exchange, routing_key="order",
                         declare=[queue], serializer="json")
"""


@pytest.fixture
def senders(settings: Settings) -> Iterator[list[subprocess.Popen]]:
    options = json.dumps(broker_transport_options(settings))
    procs = [subprocess.Popen([sys.executable, "-c", SENDER, options, name, "40"],
                              cwd=Path(__file__).resolve().parents[2])
             for name in ("a", "b", "c")]
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def test_processes_sending_at_once_keep_each_ones_order(settings: Settings,
                                                        senders: list[subprocess.Popen]
                                                        ) -> None:
    """Three processes send 40 messages each at once: every message arrives once, and each
    process's in the order it sent them (the sequence is taken under one lock)."""
    for proc in senders:
        assert proc.wait(timeout=60) == 0
    got = receive(settings, ORDERED_FILESYSTEM, 120)
    for name in ("a", "b", "c"):
        assert [i for sender, i in got if sender == name] == list(range(40))
    names = sorted(p.name for p in (settings.broker_folder / "queue").iterdir())
    assert names == []  # all read, none half-written or left behind


def test_celery_uses_it_for_the_embedded_broker(settings: Settings) -> None:
    app = make_celery(settings)
    with app.connection_for_write() as conn:
        assert type(conn.transport).__module__ == "jobs.ordered_filesystem"
    redis = make_celery(settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"}))
    assert redis.connection_for_write().transport_cls == "redis"
