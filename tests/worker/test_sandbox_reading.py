"""What reading a sandbox's answers costs the worker (worker/sandbox.py, `_collect` and its
`_ReadGovernor`). The sandbox's cgroup bounds the cores of the sandbox's own processes, not the
worker thread that reads its pipes: attacker Python runs directly as the sandboxed child (as in
tests/worker/test_sandbox_escape.py) and floods the frame pipe with tiny progress frames, or its
stderr; the worker's thread spends at most the burst and its share of a core on it (a control
with the governor off shows the flood taking the worker's core). One result, written whole, is
received at once; a second result is refused from its header."""

from __future__ import annotations

import os
import time

import pytest

from nadcore.uploaded.isolated import RESULT, encode_frame
from worker import sandbox

LIMITS = sandbox.Limits(wall_s=60, memory_bytes=1 << 30, scratch_bytes=64 << 20,
                        max_result_bytes=300 << 20)
BURST_S = 0.3
FLOOD_S = 3.0

pytestmark = pytest.mark.skipif(sandbox.check_available() is not None,
                                reason=f"no sandbox here: {sandbox.check_available()}")

FLOOD = """
import os, struct, sys, time
fd, target = int(sys.argv[1]), sys.argv[2]
frame = b'P' + struct.pack('>I', 22) + b'{"done":1,"total":100}'
block = frame * 2000 if target == 'frames' else b'x' * 64000
start = time.monotonic()
while time.monotonic() - start < %s:
    os.write(fd if target == 'frames' else 2, block)
"""


def collect(code: str, *args: str) -> tuple[sandbox.Outcome | Exception, float, float, int]:
    """Runs `code` as the sandboxed child with the frame pipe's descriptor as its first
    argument; returns what the worker made of it (or the error), the worker thread's CPU
    seconds and the wall seconds of reading, and the progress frames it passed on."""
    user = sandbox.host_user()
    seen = [0]

    def progress(done: int, total: int) -> None:
        seen[0] += 1

    with sandbox.job_folder(user, None, {"task": "test"}) as job, \
            sandbox.confined(LIMITS) as cgroup:
        read_fd, write_fd = os.pipe()
        try:
            proc = sandbox.spawn(job, LIMITS, user, fd=write_fd, cgroup=cgroup,
                                 child=sandbox.python_child(LIMITS, "-c", code, str(write_fd),
                                                            *args))
        finally:
            os.close(write_fd)
        start, cpu = time.monotonic(), time.thread_time()
        try:
            outcome: sandbox.Outcome | Exception = sandbox._collect(
                proc, read_fd, LIMITS, start, progress, None, 0.5)
        except sandbox.SandboxError as exc:
            outcome = exc
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stderr is not None:
                proc.stderr.close()
    return outcome, time.thread_time() - cpu, time.monotonic() - start, seen[0]


@pytest.mark.parametrize("target", ["frames", "stderr"])
def test_a_flood_costs_the_worker_its_burst_and_share_only(
        target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "READ_CPU_BURST_S", BURST_S)
    _, cpu, wall, _ = collect(FLOOD % FLOOD_S, target)
    bound = BURST_S + sandbox.READ_CPU_SHARE * wall
    assert cpu < bound + 0.4, (cpu, wall, bound)  # + one read's decoding past the bound
    monkeypatch.setattr(sandbox, "READ_CPU_BURST_S", 1e9)  # control: the governor off
    _, free_cpu, free_wall, _ = collect(FLOOD % FLOOD_S, target)
    assert free_cpu > cpu + 0.5, (free_cpu, free_wall, cpu, wall)


WHOLE = """
import os, sys
fd = int(sys.argv[1])
frames = [bytes.fromhex(h) for h in sys.argv[2:]] or [b'R' + (256 << 20).to_bytes(4, 'big') +
                                                      bytes(range(256)) * (1 << 20)]
for frame in frames:
    view = memoryview(frame)
    while view:  # each frame written whole, as nadcore.uploaded.isolated sends it
        view = view[os.write(fd, view):]
"""


def test_one_result_written_whole_is_received_without_waiting() -> None:
    """256 MiB: within the governor's allowance for a result, received at once and intact."""
    outcome, cpu, wall, _ = collect(WHOLE)
    assert isinstance(outcome, sandbox.Outcome), outcome
    assert outcome.result is not None and outcome.result[:] == bytes(range(256)) * (1 << 20)
    assert wall < 30, (cpu, wall)


def test_a_second_result_is_refused_from_its_header() -> None:
    first, second = encode_frame(RESULT, b"a" * 10), encode_frame(RESULT, b"b" * 10)
    outcome, _, _, _ = collect(WHOLE, first.hex(), second.hex())
    assert isinstance(outcome, sandbox.SandboxError), outcome
    assert str(outcome) == "the sandboxed model sent 10 bytes; at most 0 are accepted"
