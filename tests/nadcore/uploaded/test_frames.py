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


def test_a_large_payload_is_read_into_one_array_of_its_length() -> None:
    data = encode_frame(RESULT, bytes(64 * MIB))
    tracemalloc.start()
    try:
        [(kind, payload)], _ = _read_all(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kind == RESULT and len(payload) == 64 * MIB and not any(payload[::4096])
    assert peak < 66 * MIB, f"{peak / MIB:.0f} MiB allocated to read 64 MiB"
