"""The sandbox's frames (nadcore.uploaded.isolated.FrameReader) as the worker reads them off the
pipe: whole, in order, an incomplete tail dropped at the end; a frame past its kind's limit
refused from its header, before its payload is read; a large payload read straight into one
array of its declared length (the worker holds results of up to gigabytes: a buffer grown
read by read copied it over and over, and a copy out of it held it twice)."""

from __future__ import annotations

import os
import threading
import tracemalloc

import pytest

from nadcore.uploaded.isolated import (
    HEADER,
    INFO,
    PROGRESS,
    RESULT,
    FrameReader,
    FrameTooLong,
    encode_frame,
)

MIB = 1 << 20


def _read_all(data: bytes, limit: int = 1 << 30) -> tuple[list, FrameReader]:
    """Every frame of `data` written to a pipe (by a thread: a pipe holds 64 KiB) and closed."""
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with os.fdopen(write_fd, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write)
    writer.start()
    reader, frames = FrameReader(read_fd, lambda kind: limit), []
    try:
        while (got := reader.read()) is not None:
            frames += got
    finally:
        writer.join()
        os.close(read_fd)
    return frames, reader


def test_frames_come_whole_and_in_order_and_an_incomplete_tail_is_dropped() -> None:
    small = encode_frame(PROGRESS, b'{"done": 1}') + encode_frame(INFO, b"{}")
    large = encode_frame(RESULT, os.urandom(3 * MIB))  # spans reads: read straight in
    tail = encode_frame(RESULT, b"x" * 100)[:50]
    frames, reader = _read_all(small + large + small + tail)
    assert [(kind, bytes(payload)) for kind, payload in frames] == [
        (PROGRESS, b'{"done": 1}'), (INFO, b"{}"), (RESULT, large[HEADER.size:]),
        (PROGRESS, b'{"done": 1}'), (INFO, b"{}")]
    assert reader.received[RESULT] == 3 * MIB + 45


def test_a_frame_past_its_limit_is_refused_from_its_header() -> None:
    """A header that declares 2 GiB against a limit of 1 MiB: refused with nothing allocated
    for it (only the header was sent)."""
    tracemalloc.start()
    try:
        with pytest.raises(FrameTooLong) as refused:
            _read_all(HEADER.pack(RESULT, 2 << 30), limit=MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refused.value.length, refused.value.limit) == (2 << 30, MIB)
    assert peak < 4 * MIB, f"{peak / MIB:.0f} MiB allocated"


def test_a_large_payload_is_read_straight_in() -> None:
    """64 MiB: no Python buffer holds it on the way (a buffer grown read by read, or a copy out
    of it, allocated 64 MiB and more); it lands in one mapping of its length."""
    data = encode_frame(RESULT, bytes(range(256)) * (256 * 1024))
    tracemalloc.start()
    try:
        [(kind, payload)], _ = _read_all(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kind == RESULT and len(payload) == 64 * MIB
    assert payload[:] == data[HEADER.size:]
    assert peak < 4 * MIB, f"{peak / MIB:.0f} MiB allocated to read 64 MiB"


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("VmRSS:"))


def test_a_declared_payload_takes_memory_as_it_arrives() -> None:
    """A header that declares 1 GiB, then 2 MiB and the end: the reader holds about what
    arrived, not the 1 GiB a zeroed bytearray of the declared length would have."""
    before = _rss()
    frames, reader = _read_all(HEADER.pack(RESULT, 1 << 30) + bytes(2 * MIB))
    grew = _rss() - before
    assert frames == [] and reader.received[RESULT] == 2 * MIB
    assert grew < 64 * MIB, f"{grew / MIB:.0f} MiB"
