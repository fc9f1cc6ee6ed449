"""The sandbox's frames (nadcore.uploaded.isolated): decoded whole, in order, an incomplete tail
kept; a large result's payload copied once while it is decoded (the worker holds results of
up to gigabytes)."""

from __future__ import annotations

import tracemalloc

from nadcore.uploaded.isolated import INFO, PROGRESS, RESULT, decode_frames, encode_frame

MIB = 1 << 20


def test_frames_decode_in_order_and_an_incomplete_tail_stays() -> None:
    whole = encode_frame(PROGRESS, b'{"done": 1}') + encode_frame(INFO, b"{}")
    tail = encode_frame(RESULT, b"x" * 100)[:50]
    buffer = bytearray(whole + tail)
    assert list(decode_frames(buffer)) == [(PROGRESS, b'{"done": 1}'), (INFO, b"{}")]
    assert buffer == tail


def test_a_large_payload_is_copied_once() -> None:
    buffer = bytearray(encode_frame(RESULT, bytes(64 * MIB)))
    tracemalloc.start()
    try:
        [(kind, payload)] = list(decode_frames(buffer))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kind == RESULT and len(payload) == 64 * MIB and not buffer
    assert peak < 1.25 * 64 * MIB, f"{peak / MIB:.0f} MiB allocated to decode 64 MiB"
