"""What a sandbox writes to its stderr reaches the worker's log escaped and bounded
(worker/sandbox.py, `logged_tail`): an uploaded model's words must not forge log lines (a fake
"succeeded" line for another task) nor send terminal escapes to whoever reads the log.

The child is a real process that writes what a hostile model would and exits without a
result; the worker's reader (`_collect`) handles it as it handles a sandbox's.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from worker.sandbox import STDERR_LOG_CHARS, Limits, SandboxError, _collect

FORGED = "\n[2026-12-06 06:00:00,000: INFO/MainProcess] Task nads.validate_architecture[x] " \
         "succeeded\r\n"
ESCAPES = "\x1b[2J\x1b]0;owned\x07\u202e"  # clear screen, set title, right-to-left override
HOSTILE = f"""
import sys
sys.stderr.write("x" * 1_000_000)
sys.stderr.write({FORGED!r} + {ESCAPES!r} + "the end")
sys.exit(1)
"""


def logged_stderr(caplog: pytest.LogCaptureFixture) -> str:
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", HOSTILE], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.close(write_fd)  # the answer pipe: the child sends nothing on it
    try:
        with caplog.at_level(logging.WARNING, logger="worker.sandbox"), \
                pytest.raises(SandboxError, match="exited with status 1 without a result"):
            _collect(proc, read_fd, Limits(wall_s=60, memory_bytes=1 << 30), time.monotonic(),
                     None, None, 0.05)
    finally:
        os.close(read_fd)
        proc.stderr.close()
    [record] = [r for r in caplog.records if "stderr ends" in r.getMessage()]
    return record.getMessage().split(": ", 1)[1]  # "... its stderr ends (escaped): <tail>"


def test_a_sandboxs_stderr_is_logged_on_one_escaped_bounded_line(
        caplog: pytest.LogCaptureFixture) -> None:
    tail = logged_stderr(caplog)
    assert tail.endswith("the end")
    assert len(tail) <= STDERR_LOG_CHARS
    assert all(c.isprintable() and c.isascii() for c in tail), "a raw control character"
    assert "\\x0a[2026-12-06" in tail  # the forged line: quoted on this one
    assert "\\x1b[2J" in tail and "\\u202e" in tail
