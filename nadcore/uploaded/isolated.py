"""The child side of the worker's sandbox (`worker/sandbox.py`): one unit of work on an uploaded
model, read from a job folder, answered in frames on one pipe.

    python -m nadcore.uploaded.isolated JOB_DIR FD

`JOB_DIR` (read-only in the sandbox) holds `request.json` ({"task": ..., ...}), `archive` (the
uploaded model) and the task's input arrays as `.npy` files. The task `validate` (input_shape,
init, output) answers `I`, the architecture's info (`nadcore.uploaded.validation`). Any other
is a job kind's: the request names the kind's sandbox module (`module`, e.g.
`nadcore.probe.sandboxed`; the request is the worker's, never the model's), whose
`run(task, request, folder, progress, info)` returns the result's bytes (`R`) and may send
`info` (`I`): `shard` for every kind that runs uploaded models, `whole` for a NAD job that
stops early.

Frames are `kind (1 byte) | length (4 bytes, big-endian) | payload`: `P` progress (JSON
{"done", "total"}), `I` JSON, `R` the result's bytes, `E` an error (JSON {"message"}). Nothing
else leaves the child: stdout and stderr go to the worker's log only. The worker trusts none of
it: it bounds every frame, parses JSON and .npz (no pickle) and checks shapes and values.
"""

from __future__ import annotations

import importlib
import json
import mmap
import os
import struct
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HEADER = struct.Struct(">cI")
PROGRESS, INFO, RESULT, ERROR = b"P", b"I", b"R", b"E"


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameTooLong(ValueError):
    """A frame's header declares more bytes than its kind may have."""

    def __init__(self, kind: bytes, length: int, limit: int) -> None:
        super().__init__(f"a frame of {length:,} bytes; at most {limit:,} are accepted")
        self.kind, self.length, self.limit = kind, length, limit


class FrameReader:
    """The frames of a pipe, as the worker reads them off it (`read()` once the pipe is readable).

    Small frames come through a buffer, a read of up to 1 MiB at a time. A frame that does not
    arrive whole in one read is read straight into an anonymous mapping of its declared length,
    once `limit(kind)` allowed that length: a result of gigabytes is neither regrown (a buffer
    grown read by read copied it over and over: 4.3 s of the worker's CPU for 1 GiB) nor copied
    out of a buffer (held twice), and its memory is taken as its bytes arrive, not when a
    header declares it (a bytearray of the declared length is zeroed at once). Payloads are
    bytes-like: bytes, or that mmap."""

    CHUNK = 1 << 20

    def __init__(self, fd: int, limit: Callable[[bytes], int]) -> None:
        self.fd, self.limit = fd, limit
        self.buffer = bytearray()
        self.kind = b""
        self.payload: mmap.mmap | None = None  # the frame being read straight in
        self.filled = 0
        self.received: Counter[bytes] = Counter()  # payload bytes read, by frame kind

    def read(self) -> list[tuple[bytes, bytes | mmap.mmap]] | None:
        """The frames that one read completed (None: the end of the pipe; an incomplete frame
        there is dropped). Raises FrameTooLong before reading a payload past its limit."""
        if self.payload is not None:
            with memoryview(self.payload) as view:
                got = os.readv(self.fd, [view[self.filled:]])
            if not got:
                return None
            self.filled += got
            self.received[self.kind] += got
            if self.filled < len(self.payload):
                return []
            frame, self.payload = (self.kind, self.payload), None
            return [frame]
        chunk = os.read(self.fd, self.CHUNK)
        if not chunk:
            return None
        self.buffer += chunk
        return self._complete()

    def _complete(self) -> list[tuple[bytes, bytes | mmap.mmap]]:
        frames: list[tuple[bytes, bytes | mmap.mmap]] = []
        at = 0
        with memoryview(self.buffer) as view:
            while len(self.buffer) - at >= HEADER.size:
                kind, length = HEADER.unpack_from(self.buffer, at)
                if length > (limit := self.limit(kind)):
                    raise FrameTooLong(kind, length, limit)
                start = at + HEADER.size
                if len(self.buffer) - start >= length:
                    frames.append((kind, bytes(view[start:start + length])))
                    self.received[kind] += length
                    at = start + length
                    continue
                self.kind, self.payload = kind, mmap.mmap(-1, length)  # length > 0 here
                self.filled = len(self.buffer) - start
                self.received[kind] += self.filled
                self.payload[:self.filled] = view[start:]
                at = len(self.buffer)
                break
        del self.buffer[:at]
        return frames


class _Channel:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: bytes, payload: bytes) -> None:
        view = memoryview(encode_frame(kind, payload))
        while view:
            view = view[os.write(self.fd, view):]

    def send_json(self, kind: bytes, value: dict) -> None:
        self.send(kind, json.dumps(value, allow_nan=False).encode())

    def progress(self) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self.send_json(PROGRESS, {"done": int(done), "total": int(total)})
        return report


Info = Callable[[dict], None]  # sends one `I` frame


def never() -> bool:
    return False  # the worker cancels by killing the sandbox


def _run(task: str, request: dict, job: Path, channel: _Channel) -> None:
    from nadcore.uploaded.network import register_archive, set_archive_checks

    set_archive_checks(bool(request.get("archive_checks", True)))
    archive = job / "archive"
    progress = channel.progress()
    if task == "validate":
        from nadcore.uploaded.validation import validate

        info = validate(archive, tuple(request["input_shape"]), request["init"],
                        request.get("output"))
        channel.send_json(INFO, info)
        return
    register_archive(archive)
    kind = importlib.import_module(str(request["module"]))
    result = kind.run(task, request, job, progress, lambda value: channel.send_json(INFO, value))
    channel.send(RESULT, result)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    job, channel = Path(args[0]), _Channel(int(args[1]))
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    request = json.loads((job / "request.json").read_text())
    try:
        _run(str(request["task"]), request, job, channel)
    except MemoryError:
        channel.send_json(ERROR, {"message": "the model ran out of memory", "memory": True})
        return 1
    except Exception as exc:  # noqa: BLE001 (every failure becomes one error frame)
        text = str(exc)
        memory = "allocate" in text or "out of memory" in text
        if not isinstance(exc, ValueError):  # ValueErrors are the engine's own, field first
            text = f"{type(exc).__name__}: {text}"
        channel.send_json(ERROR, {"message": text, "memory": memory})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
