"""Uploaded models run only here: one bubblewrap sandbox per validation or shard.

Layer two of the two that keep an uploaded model from doing more than compute (layer one,
`nadcore.untrusted`, refuses what is not a plain network before loading it). Each is meant to
be enough alone. The child (`python -m nadcore.isolated`) runs under `bwrap`:

- in new user, pid, network, IPC, UTS and cgroup namespaces (`--unshare-all --unshare-user`:
  no user namespace is an error, never a sandbox as root), as uid and gid
  65534 with every capability dropped, in a new session, dying with the worker;
- seeing only read-only system directories (`/usr` and its links), the Python installation and
  the `nadcore` package, its job folder (read-only) and a private `/tmp` of bounded size: not
  the service's data directory, blobs, database, broker, key files, `/etc` or any home folder;
- with no network (an empty namespace: not even loopback), and an environment of PATH, HOME,
  thread counts and CUDA_VISIBLE_DEVICES only (no NADS_* setting, URL or credential);
- under rlimits set before exec: RLIMIT_DATA (memory), RLIMIT_CPU, RLIMIT_FSIZE, RLIMIT_NOFILE
  and no core dumps;
- killed (SIGKILL to its process group; the pid namespace dies with its first process) on
  cancel, past its wall time, or when it sends more than it may.

It speaks to the worker only through one pipe, in frames (`nadcore.isolated`): progress counts,
one JSON object, one result (.npz bytes; callers load them with allow_pickle=False and check
shapes and values) or an error, which reaches users only as the service's own words with at
most a short escaped excerpt. bubblewrap is Debian's `bubblewrap` package (the worker image
installs it); without it, or without user namespaces, uploaded models are refused to run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

import nadcore
from nadcore.custom_check import excerpt
from nadcore.isolated import ERROR, INFO, PROGRESS, RESULT, decode_frames, pending_length

log = logging.getLogger(__name__)

SANDBOX_UID = 65534
MAX_JSON_FRAME = 1 << 20
MAX_ERROR_CHARS = 600  # of the child's error message, escaped


class SandboxError(RuntimeError):
    """The sandboxed work failed; the message is the service's own words, safe to show."""


class SandboxCancelled(RuntimeError):
    """should_stop() turned true: the sandbox was killed."""


class SandboxUnavailable(SandboxError):
    """bubblewrap is missing or cannot create its namespaces on this worker."""


@dataclass(frozen=True)
class Limits:
    wall_s: float
    memory_bytes: int
    threads: int = 1
    scratch_bytes: int = 256 << 20
    max_result_bytes: int = 4 << 30
    what: str = "the sandbox"  # how messages name the limits' settings


@dataclass
class Outcome:
    info: dict = field(default_factory=dict)
    result: bytes | None = None
    seconds: float = 0.0


# -- the bwrap command line -----------------------------------------------------------------
def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/") / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    return args


def _python_mounts() -> list[str]:
    """The interpreter, the virtual environment and the nadcore package, read-only."""
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent.parent,
             Path(nadcore.__file__).resolve().parent}
    args: list[str] = []
    for root in sorted(roots, key=lambda p: len(p.parts)):
        if str(root).startswith("/usr/") or root == Path("/usr"):
            continue
        args += ["--ro-bind", str(root), str(root)]
    if Path(sys.prefix) != Path(sys.prefix).resolve():  # a venv reached through a link
        args += ["--symlink", str(Path(sys.prefix).resolve()), str(Path(sys.prefix))]
    return args


def _gpu_mounts() -> list[str]:
    nodes = sorted(str(p) for p in Path("/dev").glob("nvidia*"))
    if not nodes:
        return []
    args = [a for node in nodes for a in ("--dev-bind", node, node)]
    return args + ["--ro-bind-try", "/sys", "/sys"]


def _environment(threads: int) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return [a for k, v in env.items() for a in ("--setenv", k, v)]


def bwrap_command(job_dir: Path, archive: Path, fd: int, limits: Limits) -> list[str]:
    """The whole command line: bwrap's options, then the child."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("the worker cannot sandbox uploaded models: bubblewrap "
                                 "(bwrap) is not installed on it")
    return [
        bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--clearenv",
        # the private /tmp first: bwrap mounts in order, and an installation that lives under
        # /tmp (a clone there) must be bound on top of it, not hidden by it
        "--size", str(limits.scratch_bytes), "--tmpfs", "/tmp",
        *_system_mounts(), *_python_mounts(),
        "--proc", "/proc", "--dev", "/dev", *_gpu_mounts(),
        "--ro-bind", str(job_dir), "/job", "--ro-bind", str(archive), "/job/archive",
        "--chdir", "/tmp", *_environment(limits.threads),
        sys.executable, "-I", "-m", "nadcore.isolated", "/job", str(fd),
    ]


@lru_cache(maxsize=1)
def check_available() -> str | None:
    """None when bwrap runs here with its namespaces, else why not (cached per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    probe = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
             "--gid", str(SANDBOX_UID),
             "--cap-drop", "ALL", "--die-with-parent", *_system_mounts(), "--", "/usr/bin/true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start ({type(exc).__name__})"
    if done.returncode != 0:
        return ("bwrap cannot create its namespaces here (user namespaces disabled?): "
                + excerpt(done.stderr.decode("utf-8", "replace")))
    return None


# -- running it -----------------------------------------------------------------------------
def _limit_child(limits: Limits) -> Callable[[], None]:
    cpu = int(math.ceil(limits.wall_s * max(1, limits.threads))) + 60

    def apply() -> None:  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.scratch_bytes, limits.scratch_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _kill(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _json(payload: bytes, what: str) -> dict:
    try:
        value = json.loads(payload)
    except ValueError:
        raise SandboxError(f"{what}: the sandboxed model sent malformed data") from None
    if not isinstance(value, dict):
        raise SandboxError(f"{what}: the sandboxed model sent malformed data")
    return value


def _child_error(value: dict, limits: Limits) -> SandboxError:
    message = value.get("message")
    quoted = excerpt(str(message), MAX_ERROR_CHARS) if message else "no reason given"
    if value.get("memory") is True:
        return SandboxError(f"the model exceeded the memory limit of {limits.memory_bytes:,} "
                            f"bytes ({limits.what}); it said: {quoted}")
    return SandboxError(quoted)


def run_sandboxed(task: str, request: dict, archive: Path, limits: Limits, *,
                  arrays: dict[str, np.ndarray] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  poll_s: float = 0.5) -> Outcome:
    """Runs `task` of `nadcore.isolated` on `archive` in a fresh sandbox and returns what it
    sent. Raises SandboxCancelled (should_stop), SandboxError (the model failed, broke a limit
    or the protocol) or SandboxUnavailable."""
    reason = check_available()
    if reason is not None:
        raise SandboxUnavailable(f"the worker cannot sandbox uploaded models: {reason}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="nads-sandbox-") as tmp:
        job = Path(tmp)
        (job / "request.json").write_text(json.dumps({**request, "task": task}))
        (job / "archive").touch()  # the mount point of the archive's read-only bind
        for name, array in (arrays or {}).items():
            np.save(job / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        os.chmod(job, 0o755)
        read_fd, write_fd = os.pipe()
        try:
            cmd = bwrap_command(job, archive, write_fd, limits)
            proc = subprocess.Popen(cmd, pass_fds=(write_fd,), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    preexec_fn=_limit_child(limits), start_new_session=True)
        finally:
            os.close(write_fd)
        try:
            outcome = _collect(proc, read_fd, limits, t0, progress, should_stop, poll_s)
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                _kill(proc)
            if proc.stderr is not None:
                proc.stderr.close()
    outcome.seconds = time.monotonic() - t0
    return outcome


def _collect(proc: subprocess.Popen, fd: int, limits: Limits, t0: float,
             progress: Callable[[int, int], None] | None,
             should_stop: Callable[[], bool] | None, poll_s: float) -> Outcome:
    buffer = bytearray()
    outcome = Outcome()
    stderr_tail = bytearray()
    open_fds = [fd] + ([proc.stderr.fileno()] if proc.stderr is not None else [])
    while open_fds:
        if should_stop is not None and should_stop():
            _kill(proc)
            raise SandboxCancelled("cancelled")
        if time.monotonic() - t0 > limits.wall_s:
            _kill(proc)
            raise SandboxError(f"the model exceeded the time limit of {limits.wall_s:g} s "
                               f"({limits.what})")
        ready, _, _ = select.select(open_fds, [], [], poll_s)
        for r in ready:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                open_fds.remove(r)
                continue
            if r != fd:  # the child's stderr: kept (a tail) for the worker's log only
                stderr_tail = (stderr_tail + chunk)[-4096:]
                continue
            buffer += chunk
            limit = limits.max_result_bytes if buffer[:1] == RESULT else MAX_JSON_FRAME
            if pending_length(buffer) > limit:
                _kill(proc)
                raise SandboxError(f"the sandboxed model sent {pending_length(buffer):,} bytes;"
                                   f" at most {limit:,} are accepted")
            for kind, payload in decode_frames(buffer):
                if kind == PROGRESS:
                    value = _json(payload, "progress")
                    done, total = value.get("done"), value.get("total")
                    if progress is not None and isinstance(done, int) and \
                            isinstance(total, int) and 0 <= done <= total:
                        progress(done, total)
                elif kind == INFO:
                    outcome.info = _json(payload, "info")
                elif kind == RESULT:
                    outcome.result = payload
                elif kind == ERROR:
                    _kill(proc)
                    raise _child_error(_json(payload, "error"), limits)
                else:
                    _kill(proc)
                    raise SandboxError("the sandboxed model broke the worker's protocol")
    code = proc.wait()
    if code != 0 or (outcome.result is None and not outcome.info):
        log.warning("sandbox exited with %s; its stderr ends: %s", code,
                    stderr_tail.decode("utf-8", "replace")[-2000:])
        if code == -signal.SIGKILL or code == 128 + signal.SIGKILL or \
                code == -signal.SIGXCPU or code == 128 + signal.SIGXCPU:
            raise SandboxError(f"the model was killed past its limits ({limits.what})")
        tail = stderr_tail.decode("utf-8", "replace")
        if "MemoryError" in tail or "allocate" in tail:
            raise SandboxError(f"the model exceeded the memory limit of "
                               f"{limits.memory_bytes:,} bytes ({limits.what})")
        raise SandboxError(f"the sandboxed model exited with status {code} without a result")
    return outcome
