"""kombu's filesystem transport with messages that are read in the order they were sent: the
embedded broker of `nads serve` (jobs/broker.py selects it for `filesystem://`).

kombu (5.7) names a message `<monotonic() in ms>_<uuid>.<queue>.msg`, unpadded, and takes the
first name in text order. Once the machine's monotonic clock crosses a power of ten in
milliseconds (1,000,000 ms: 16.7 minutes after boot; then 2.8 hours, 27.8 hours...), '999999_'
sorts after '1000000_' and newer messages are read before older ones; after a reboot the clock
starts again near zero, and messages left in the folder are read in an order that depends on
both clocks' digits. (Reported upstream: docs/service.md, "Embedded broker".)

Here a message is named `<send sequence, 20 digits>_<uuid>.<queue>.msg`. The sequence is a
counter kept in a file beside the queue (`sequence_file`) and taken under an exclusive lock, so
it grows across the processes that send (the API, every worker, beat) and across restarts, and
no clock is read. While the lock is held the message is written under a temporary name that no
reader takes and renamed into place, so a reader never sees a message before one sent earlier,
nor a half-written one. A reader takes the lowest number first (names in kombu's own form, left
by an older version, before them) and claims it with one rename within the broker's folder,
which exactly one reader wins.

A worker asked to stop stops waiting for messages at once (`stop_waiting`, called by
worker/app.py on Celery's `worker_shutting_down`): Celery runs a polling transport in a
blocking loop that sees the stop only between two 2 s waits for a message, and waits once
more after it, so an idle worker took 4 s to begin its warm shutdown.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

WIDTH = 20  # digits of the sequence: 10**20 sends at any rate outlasts the machine
SUFFIX = ".msg"
_stopping = threading.Event()  # set for good by stop_waiting()
TEMPORARY = ".sending-"  # a leading dot: kombu's readers match `<name>.<queue>.msg` only


def stop_waiting() -> None:
    """From now on, in this process, every wait for a message (`Transport.drain_events`)
    returns at once without taking one: the worker is stopping."""
    _stopping.set()


def send_order(name: str) -> tuple[int, int, str]:
    """The sort key of a message name: kombu's own names (`<monotonic ms>_...`, from before
    this transport) first, by their number, then this transport's by their sequence."""
    prefix = name.partition("_")[0]
    number = int(prefix) if prefix.isdigit() else -1
    return (1 if len(prefix) == WIDTH else 0), number, name


def highest_sequence(names: Iterable[str]) -> int:
    """The highest sequence among this transport's message names (0 when there is none)."""
    return max((number for ours, number, _ in map(send_order, names) if ours), default=0)


class Channel(filesystem.Channel):
    """Sends in sequence order (`_put`) and reads the lowest sequence first (`_get`)."""

    @property
    def sequence_file(self) -> Path:
        default = Path(self.data_folder_out).parent / "sequence"
        return Path(self.transport_options.get("sequence_file", default))

    def _next_sequence(self, counter: int) -> int:
        """The number after the one stored in the open, locked counter file `counter`; a file
        that is empty or unreadable (deleted, a crash mid-write) restarts after the highest
        number still in the queue folder, so no new message sorts before one left there."""
        raw = os.pread(counter, 64, 0).strip()
        last = int(raw) if raw.isdigit() else highest_sequence(os.listdir(self.data_folder_out))
        following = last + 1
        written = f"{following}\n".encode()
        os.pwrite(counter, written, 0)
        os.ftruncate(counter, len(written))
        return following

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        folder = self.data_folder_out
        body = str_to_bytes(dumps(payload))
        temporary = os.path.join(folder, f"{TEMPORARY}{uuid.uuid4().hex}")
        try:
            # mode as kombu's message files: the umask decides who else may send
            counter = os.open(self.sequence_file, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise ChannelError(f"Cannot open the sequence file {self.sequence_file}") from exc
        try:
            fcntl.flock(counter, fcntl.LOCK_EX)
            name = f"{self._next_sequence(counter):0{WIDTH}d}_{uuid.uuid4()}.{queue}{SUFFIX}"
            with open(temporary, "wb") as f:
                f.write(body)
            os.rename(temporary, os.path.join(folder, name))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise ChannelError(f"Cannot add a message to {folder!r}") from exc
        finally:
            os.close(counter)  # releases the lock

    def get_table(self, exchange: str) -> list:
        """The exchange's bindings; a table being created (empty) has none yet."""
        file = self._exchange_file(exchange)
        try:
            with open(file, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_SH)
                raw = f.read()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc
        return [filesystem.exchange_queue_t(*b) for b in loads(raw)] if raw else []

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """Adds the binding to the exchange's table in the control folder. kombu checks that
        the file exists, then opens it, truncating when it did not: a process that opens it
        between another's create and its write reads an empty table (JSONDecodeError; seen
        with three processes declaring at once, as `nads serve`'s API and workers start).
        Here the file is opened without truncating, locked, then read (empty: no binding)."""
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            with open(os.open(file, os.O_RDWR | os.O_CREAT, 0o666), "r+b", buffering=0) as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                raw = f.read()
                table = [filesystem.exchange_queue_t(*b) for b in loads(raw)] if raw else []
                if binding not in table:
                    f.seek(0)
                    f.write(str_to_bytes(dumps([binding, *table])))
                    f.truncate()
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _get(self, queue: str) -> dict:
        wanted = f"{queue}{SUFFIX}"
        folder = self.data_folder_in
        claimed_folder = self.processed_folder
        os.makedirs(claimed_folder, exist_ok=True)
        names = sorted((n for n in os.listdir(folder) if n.partition(".")[2] == wanted),
                       key=send_order)
        for name in names:
            claimed = os.path.join(claimed_folder, name)
            try:
                os.rename(os.path.join(folder, name), claimed)
            except FileNotFoundError:
                continue  # another reader took it
            except OSError as exc:  # e.g. the processed folder on another file system
                raise ChannelError(f"Cannot claim the message {name!r}") from exc
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                if not self.store_processed:
                    os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read the message {claimed!r}") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    """kombu's filesystem transport with the channel above, whose wait for a message ends
    within a poll of `stop_waiting`."""

    Channel = Channel

    def drain_events(self, connection: object, timeout: float | None = None) -> None:
        """kombu's: takes the next message, polling every `polling_interval` until one comes
        or `timeout` passes (TimeoutError, i.e. socket.timeout); at once after stop_waiting(),
        TimeoutError without taking one."""
        started = time.monotonic()
        interval = self.polling_interval
        if timeout and interval and interval > timeout:
            interval = timeout
        while not _stopping.is_set():
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
                if interval is not None:
                    time.sleep(interval)
        raise TimeoutError  # socket.timeout, what kombu raises
