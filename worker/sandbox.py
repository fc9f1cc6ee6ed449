"""Uploaded models run only here: one bubblewrap sandbox per validation or shard.

Layer two of the two that keep an uploaded model from doing more than compute (layer one,
`nadcore.uploaded.untrusted`, refuses what is not a plain network before loading it). Each is meant
to be enough alone. The child (`python -m nadcore.uploaded.isolated`) runs under `bwrap`:

- never as host root: a worker running as root starts bwrap as the dedicated unprivileged user
  `nads-sandbox` (NADS_SANDBOX_USER; created by scripts/install.sh and the images) and refuses
  to start when it cannot; a non-root worker's sandbox is the worker's own uid. Inside, in new
  user, pid, network, IPC, UTS and cgroup namespaces, it is uid and gid 65534 with every
  capability dropped, pid 1 of its namespace (no bwrap process beside it), in a new session,
  dying with the worker; it cannot create namespaces (`--disable-userns` and the filter);
- under a seccomp filter (`worker/seccomp.py`): no ptrace, process_vm_*, unshare, setns, mount,
  keyctl, bpf, perf_event_open, userfaultfd, io_uring, memfd_create or System V shared memory;
- seeing only read-only system directories (`/usr` and its links), the Python installation and
  the `nadcore` package, its job folder (read-only: the request, the input arrays and a copy of
  the archive), a fresh /proc of its own pid namespace with /proc/sys read-only, a private
  `/tmp` and `/dev/shm` of bounded size: not the service's data directory, blobs, database,
  broker, key files, `/etc` or any home folder;
- with no network (an empty namespace: not even loopback); bwrap itself starts with an empty
  environment, and the child gets PATH, HOME, thread counts and CUDA_VISIBLE_DEVICES only (no
  NADS_* setting, URL or credential);
- in a memory and pids cgroup of its own where the worker can make one
  (`worker/sandbox_cgroup.py`): everything its processes together charge, shared memory and
  tmpfs included, is bounded by its memory limit, without swap, and its tasks by the process
  limit; an OOM kill there is the job's memory error; where the cpu controller can be had too,
  its processes together run on at most its threads' cores (a CPU quota);
- under rlimits set before exec: RLIMIT_DATA (heap), RLIMIT_AS (every mapping, shared memory
  included; CPU workers only: CUDA reserves address space by the terabyte), RLIMIT_CPU,
  RLIMIT_FSIZE, RLIMIT_NOFILE, no core dumps, and RLIMIT_NPROC (set inside its user namespace,
  so that it counts this sandbox's tasks only);
- killed (SIGKILL to its process group; the pid namespace dies with its first process) on
  cancel, past its wall time, or when it sends more than it may; what reading its pipes costs
  the worker is bounded (`_ReadGovernor`): a flood of frames or of stderr makes the worker
  wait, and the child block on its pipe.

It speaks to the worker only through one pipe, in frames (`nadcore.uploaded.isolated`): progress
counts, one JSON object, one result (.npz bytes; callers check the archive's declared sizes before
loading it with allow_pickle=False and check shapes and values) or an error, which reaches
users only as the service's own words with at most a short escaped excerpt. bubblewrap is
Debian's `bubblewrap` package (the worker image installs it); without it, or without user
namespaces, uploaded models are refused to run. docs/service.md's threat model says what this
holds against and what it does not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import mmap
import os
import pwd
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

import nadcore
from nadcore.uploaded.isolated import ERROR, INFO, PROGRESS, RESULT, FrameReader, FrameTooLong
from nadcore.uploaded.validation import escaped, excerpt
from store.settings import get_settings
from worker import sandbox_cgroup, seccomp
from worker.sandbox_cgroup import SandboxCgroup

log = logging.getLogger(__name__)

SANDBOX_UID = 65534  # inside the sandbox's user namespace
MAX_JSON_FRAME = 1 << 20
MAX_ERROR_CHARS = 600  # of the child's error message, escaped
STDERR_LOG_CHARS = 2000  # of the end of the child's stderr in the worker's log, escaped
# What reading a sandbox's pipes may cost the worker's thread (`_ReadGovernor`): CPU seconds up
# front, this share of one core, and this much per GiB of its one result (measured on a 2-core VM:
# 0.7 s to receive 1 GiB into memory touched before, 3.5 s into fresh memory).
READ_CPU_BURST_S = 2.0
READ_CPU_SHARE = 0.05
READ_CPU_PER_RESULT_GIB = 5.0
SHM_BYTES = 16 << 20  # the private /dev/shm
# Address space beyond the memory limit (RLIMIT_AS = memory + this): the child's mappings of
# Python, numpy and torch's libraries. Measured: 3.1 GiB of VmSize after `import torch`
# (torch 2.14.1+cu130 wheel, x86-64, CPU), 3.2 GiB with nadcore; 0.9 GiB to spare.
ADDRESS_SPACE_BASE = 4 << 30
PROCESSES = 64  # tasks (threads included) in one sandbox, at least 8 per compute thread
BWRAP_TASKS = 2  # bwrap's own processes in the sandbox's cgroup, beside the child's tasks
INSTALL_FIX = "run scripts/install.sh as root (it creates the user and grants the access)"


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
    max_result_bytes: int = 1 << 20  # validation sends none; jobs set their own
    what: str = "the sandbox"  # how messages name the limits' settings
    wall_what: str = ""  # how the time limit's message names its origin (default: `what`)


@dataclass
class Outcome:
    info: dict = field(default_factory=dict)
    result: bytes | mmap.mmap | None = None
    seconds: float = 0.0


# -- who the sandbox is on the host ---------------------------------------------------------
@dataclass(frozen=True)
class HostUser:
    """The host uid and gid that bwrap runs as; `drop`: the worker (root) switches to them."""

    name: str
    uid: int
    gid: int
    drop: bool


def host_user(name: str | None = None) -> HostUser:
    """The dedicated user `name` (NADS_SANDBOX_USER) when the worker is root, else the worker's
    own uid. SandboxUnavailable when a root worker cannot drop to an unprivileged user."""
    if os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        with contextlib.suppress(KeyError):
            return HostUser(pwd.getpwuid(uid).pw_name, uid, gid, drop=False)
        return HostUser(str(uid), uid, gid, drop=False)
    name = name or get_settings().sandbox_user
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxUnavailable(
            f"NADS_SANDBOX_USER: the worker runs as root and the sandbox must not: user "
            f"{name!r} does not exist; {INSTALL_FIX}, or run the worker as a non-root user"
        ) from None
    if entry.pw_uid == 0 or entry.pw_gid == 0:
        raise SandboxUnavailable(f"NADS_SANDBOX_USER: user {name!r} has uid or gid 0; the "
                                 "sandbox needs an unprivileged user")
    return HostUser(name, entry.pw_uid, entry.pw_gid, drop=True)


def _share(path: Path, user: HostUser, mode: int) -> None:
    """`path` readable by the sandbox's host user and by no other user."""
    if user.drop:
        os.chown(path, -1, user.gid)  # group: the sandbox user's own, mode 0o750 / 0o640
        os.chmod(path, mode)
    else:
        os.chmod(path, mode & 0o700)


@contextlib.contextmanager
def job_folder(user: HostUser, archive: Path | None, request: dict,
               arrays: dict[str, np.ndarray] | None = None) -> Iterator[Path]:
    """A fresh folder that the sandbox sees as /job: request.json, the input arrays and a copy
    of the archive (the blob store itself stays out of the sandbox user's reach)."""
    with tempfile.TemporaryDirectory(prefix="nads-sandbox-") as tmp:
        job = Path(tmp)
        (job / "request.json").write_text(json.dumps(request))
        if archive is not None:
            shutil.copyfile(archive, job / "archive")
        for name, array in (arrays or {}).items():
            np.save(job / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
        for item in job.iterdir():
            _share(item, user, 0o640)
        _share(job, user, 0o750)
        yield job


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


def _python_roots() -> list[Path]:
    """The interpreter, the virtual environment, the other site-packages on the import path (a
    .pth may add one) and the nadcore package, outside /usr: not the repository's root nor the
    working directory, which hold more than code."""
    package = Path(nadcore.__file__).resolve().parent
    roots = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
             Path(sys.executable).resolve().parent.parent, package}
    roots |= {Path(entry).resolve() for entry in sys.path  # never the working directory
              if entry and Path(entry).name in ("site-packages", "dist-packages")
              and Path(entry).is_dir()}
    kept: list[Path] = []
    for root in sorted(roots, key=lambda p: len(p.parts)):
        if not (root == Path("/usr") or root.is_relative_to("/usr")) \
                and not any(root.is_relative_to(k) for k in kept):
            kept.append(root)
    return kept


def _python_mounts() -> list[str]:
    args = [a for root in _python_roots() for a in ("--ro-bind", str(root), str(root))]
    if Path(sys.prefix) != Path(sys.prefix).resolve():  # a venv reached through a link
        args += ["--symlink", str(Path(sys.prefix).resolve()), str(Path(sys.prefix))]
    return args


def _gpu_nodes() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*"))


def _gpu_mounts() -> list[str]:
    """The GPU's device nodes, and the host's /sys read-only (the CUDA driver reads the PCI
    topology there) with its cgroup tree hidden under an empty read-only tmpfs: the sandbox has
    no business reading the host's processes' cgroups, their limits and usage."""
    nodes = _gpu_nodes()
    if not nodes:
        return []
    args = [a for node in nodes for a in ("--dev-bind", node, node)]
    return args + ["--ro-bind-try", "/sys", "/sys", "--size", "4096",
                   "--tmpfs", "/sys/fs/cgroup", "--remount-ro", "/sys/fs/cgroup"]


def _environment(threads: int) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "PYTHONDONTWRITEBYTECODE": "1",
           "OMP_WAIT_POLICY": "PASSIVE"}
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return [a for k, v in env.items() for a in ("--setenv", k, v)]


def _program(name: str) -> str:
    path = shutil.which(name, path="/usr/bin:/bin")
    if path is None:
        raise SandboxUnavailable(f"the worker cannot sandbox uploaded models: {name} is not "
                                 "installed on it")
    return path


def process_limit(limits: Limits) -> int:
    """Tasks (threads included) that the sandboxed child may have."""
    return max(PROCESSES, 8 * limits.threads)


def python_child(limits: Limits, *argv: str) -> list[str]:
    """`python -I ARGV...` as the sandbox runs it: first lowering RLIMIT_NPROC inside the
    sandbox's user namespace (an rlimit set there counts this sandbox's tasks only; set before
    bwrap it would count every task of the host user)."""
    processes = process_limit(limits)
    return [_program("prlimit"), f"--nproc={processes}:{processes}", "--",
            sys.executable, "-I", *argv]


def bwrap_command(job_dir: Path, fd: int, seccomp_fd: int, limits: Limits,
                  child: list[str] | None = None) -> list[str]:
    """The whole command line: bwrap's options, then the child (`nadcore.uploaded.isolated` reading
    /job and answering on `fd`, unless `child` is given)."""
    if child is None:
        child = python_child(limits, "-m", "nadcore.uploaded.isolated", "/job", str(fd))
    return [
        _program("bwrap"), "--unshare-all", "--unshare-user", "--disable-userns", "--as-pid-1",
        "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
        "--cap-drop", "ALL", "--new-session", "--die-with-parent", "--clearenv",
        # the private /tmp first: bwrap mounts in order, and an installation that lives under
        # /tmp (a clone there) must be bound on top of it, not hidden by it
        "--size", str(limits.scratch_bytes), "--tmpfs", "/tmp",
        *_system_mounts(), *_python_mounts(),
        # a /proc of the sandbox's own pid namespace; its sysctls read-only (not namespaced:
        # /proc/sys/kernel is the host's)
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys",
        "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm", *_gpu_mounts(),
        # bwrap's /dev is a tmpfs of no set size: read-only once its nodes are in (its device
        # nodes still work; /dev/shm is its own, bounded mount), or files there would be host
        # memory that only a cgroup counts
        "--remount-ro", "/dev",
        "--ro-bind", str(job_dir), "/job",
        "--seccomp", str(seccomp_fd),
        "--chdir", "/tmp", *_environment(limits.threads),
        *child,
    ]


# -- starting it ----------------------------------------------------------------------------
def address_space_limit(limits: Limits) -> int | None:
    """RLIMIT_AS of the child: None on a GPU worker (the CUDA driver reserves far more address
    space than it uses; RLIMIT_DATA and the tmpfs sizes bound memory there)."""
    return None if _gpu_nodes() else limits.memory_bytes + ADDRESS_SPACE_BASE


def _limit_child(limits: Limits, cgroup_procs: list[int]) -> Callable[[], None]:
    cpu = int(math.ceil(limits.wall_s * max(1, limits.threads))) + 60
    address_space = address_space_limit(limits)

    def apply() -> None:  # in the child, before exec: bwrap is born in the cgroup
        sandbox_cgroup.join(cgroup_procs)
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
        if address_space is not None:
            resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.scratch_bytes, limits.scratch_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def _seccomp_fd() -> int:
    """A pipe's read end holding the filter, for bwrap's --seccomp (the caller closes it)."""
    if not seccomp.supported():
        raise SandboxUnavailable("the worker cannot sandbox uploaded models: no seccomp filter "
                                 "for this machine's architecture (x86_64 and aarch64 only)")
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, seccomp.program())  # some 400 bytes: within the pipe's buffer
    finally:
        os.close(write_fd)
    return read_fd


def spawn(job_dir: Path, limits: Limits, user: HostUser, *, fd: int | None = None,
          child: list[str] | None = None, stdout: int = subprocess.DEVNULL,
          command: Callable[[list[str]], list[str]] | None = None,
          cgroup: SandboxCgroup | None = None) -> subprocess.Popen:
    """Starts bwrap as `user` with an empty environment, `fd` (the answer pipe) passed on, inside
    `cgroup` (`confined()`) when there is one. `command` may rewrite the command line (tests
    only: to show that their probes fail when a protection is taken away)."""
    seccomp_fd = _seccomp_fd()
    cgroup_procs = cgroup.open_procs() if cgroup is not None else []
    try:
        cmd = bwrap_command(job_dir, -1 if fd is None else fd, seccomp_fd, limits, child)
        if command is not None:
            cmd = command(cmd)
        drop = {"user": user.uid, "group": user.gid, "extra_groups": []} if user.drop else {}
        return subprocess.Popen(cmd, pass_fds=(seccomp_fd,) + (() if fd is None else (fd,)),
                                env={}, stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.PIPE,
                                preexec_fn=_limit_child(limits, cgroup_procs),
                                start_new_session=True, **drop)
    finally:
        os.close(seccomp_fd)
        for procs in cgroup_procs:
            os.close(procs)


def confined(limits: Limits) -> contextlib.AbstractContextManager[SandboxCgroup | None]:
    """The cgroup of one sandbox (None where the worker can make none): its memory limit, its
    child's tasks plus bwrap's own, and the cores of its threads (its worker process's)."""
    return sandbox_cgroup.confined(limits.memory_bytes, process_limit(limits) + BWRAP_TASKS,
                                   max(1, limits.threads))


_PROBE = """
import importlib.util, numpy
open('/job/request.json').read()
spec = importlib.util.find_spec('nadcore')
open(spec.submodule_search_locations[0] + '/uploaded/isolated.py').read()
"""

# Run as the sandbox's host user when the probe fails: for each path, the first directory on
# the way to it that this user cannot search, or the path itself when it cannot read it.
_DIAGNOSE = """
import json, os, sys
for path in sys.argv[1:]:
    parts = path.split('/')
    for i in range(2, len(parts) + 1):
        here = '/'.join(parts[:i])
        try:
            os.stat(here)
        except PermissionError:
            print(json.dumps(['/'.join(parts[:i - 1]) or '/', path])); break
    else:
        if not os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0)):
            print(json.dumps([path, path]))
"""


def unreachable(user: HostUser, paths: list[Path]) -> list[str]:
    """What keeps `user` from reading `paths`, in words naming the directory and its mode."""
    done = subprocess.run([sys.executable, "-I", "-S", "-c", _DIAGNOSE, *map(str, paths)],
                          capture_output=True, text=True, timeout=60, env={},
                          **({"user": user.uid, "group": user.gid, "extra_groups": []}
                             if user.drop else {}))
    problems = []
    for line in done.stdout.splitlines():
        blocking, path = json.loads(line)
        st = os.stat(blocking)
        problems.append(f"{blocking} (mode {st.st_mode & 0o7777:04o}, owner uid {st.st_uid}) "
                        f"keeps {user.name} from reading {path}")
    return problems


@lru_cache(maxsize=1)
def check_available() -> str | None:
    """None when bwrap runs here as it will for a model, with its namespaces, its filter and
    every mount readable by the sandbox's host user; else why not (cached per process)."""
    try:
        user = host_user()
        limits = Limits(wall_s=60, memory_bytes=1 << 30)
        with job_folder(user, None, {"task": "probe"}) as job, confined(limits) as cgroup:
            proc = spawn(job, limits, user, child=python_child(limits, "-c", _PROBE),
                         cgroup=cgroup)
            try:
                _, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                _kill(proc)
                return "bwrap did not finish its start-up check within 60 s"
    except SandboxUnavailable as exc:
        return str(exc).removeprefix("the worker cannot sandbox uploaded models: ")
    except OSError as exc:
        return f"bwrap could not start ({type(exc).__name__}: {exc})"
    if proc.returncode == 0:
        return None
    problems = unreachable(user, [Path(tempfile.gettempdir()), *_python_roots()])
    if problems:
        return "; ".join(problems) + f" ({INSTALL_FIX}, or make those directories searchable)"
    return ("bwrap cannot create its sandbox here (user namespaces disabled?): "
            + excerpt(err.decode("utf-8", "replace")))


def startup_problem() -> str | None:
    """Why this worker must not start: it is root and cannot run the sandbox as another user.
    (A non-root worker without bwrap starts and refuses uploaded models.)"""
    if os.geteuid() != 0:
        return None
    reason = check_available()
    if reason is None or reason.startswith("bwrap is not installed"):
        return None
    return f"the worker runs as root but cannot run uploaded models as an unprivileged user: " \
           f"{reason}"


def bounds() -> str:
    """Which bounds hold on a sandbox's memory and tasks on this worker (its start-up log)."""
    rlimits = "RLIMIT_DATA (heap) per process"
    if _gpu_nodes():
        rlimits += ", no RLIMIT_AS (a GPU worker)"
    else:
        rlimits += ", RLIMIT_AS (every mapping, shared memory included) per process"
    rlimits += f", RLIMIT_NPROC {PROCESSES} tasks, /tmp and /dev/shm capped"
    node = sandbox_cgroup.available()
    if node is not None:
        cpu = ", a CPU quota of its threads' cores" if node.cpu is not None else ""
        return (f"a cgroup per sandbox ({node.describe()}): its memory limit counts everything "
                f"its processes charge (shared memory, tmpfs, page cache), no swap, a task "
                f"limit{cpu}; besides, {rlimits}")
    unbounded = "shared memory is bounded per process only" if not _gpu_nodes() else \
        "shared memory (mmap MAP_SHARED) is not bounded"
    return (f"no cgroup per sandbox ({sandbox_cgroup.why_unavailable()}): {rlimits}; "
            f"{unbounded}, and each of a sandbox's processes may hold the limit")


# -- running it -----------------------------------------------------------------------------
def _kill(proc: subprocess.Popen) -> None:
    """Kills the sandbox: bwrap's children first (the sandboxed child, pid 1 of its pid
    namespace, whose death takes every process of the namespace with it; it is in a session of
    its own, not in bwrap's process group), then bwrap's group. The child also dies with bwrap
    by its parent-death signal, which the seccomp filter keeps it from clearing: this is the
    second of the two, and the cgroup, where there is one, a third."""
    for pid in _children(proc.pid):
        with contextlib.suppress(OSError):  # gone meanwhile (a pidfd names one process)
            fd = os.pidfd_open(pid)
            try:
                if pid in _children(proc.pid):  # still bwrap's once the fd holds it
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _children(pid: int) -> set[int]:
    """The children of `pid` (/proc/<pid>/task/*/children; none where it cannot be read)."""
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def _json(payload: bytes | mmap.mmap, what: str) -> dict:
    try:
        value = json.loads(bytes(payload))  # a frame that spanned reads is an mmap
    except (ValueError, RecursionError):  # `[[[[...` within the frame bound nests too deep
        raise SandboxError(f"{what}: the sandboxed model sent malformed data") from None
    if not isinstance(value, dict):
        raise SandboxError(f"{what}: the sandboxed model sent malformed data")
    return value


def memory_error(limits: Limits, said: str = "") -> SandboxError:
    """The model broke its memory limit: its allocation failed (an rlimit; `said`: what it
    reported) or the kernel killed its sandbox (the cgroup's bound)."""
    if said:
        return SandboxError(f"memory: the model exceeded the memory limit of "
                            f"{limits.memory_bytes:,} bytes ({limits.what}); it said: {said}")
    return SandboxError(f"memory: the model used more than {limits.memory_bytes / 2**20:,.0f} "
                        f"MiB, the memory limit of {limits.memory_bytes:,} bytes "
                        f"({limits.what}); its sandbox was killed")


def _child_error(value: dict, limits: Limits) -> SandboxError:
    message = value.get("message")
    quoted = excerpt(str(message), MAX_ERROR_CHARS) if message else "no reason given"
    if value.get("memory") is True:
        return memory_error(limits, quoted)
    return SandboxError(quoted)


def run_sandboxed(task: str, request: dict, archive: Path, limits: Limits, *,
                  arrays: dict[str, np.ndarray] | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None,
                  poll_s: float = 0.5) -> Outcome:
    """Runs `task` of `nadcore.uploaded.isolated` on `archive` in a fresh sandbox and returns what
    it sent. Raises SandboxCancelled (should_stop), SandboxError (the model failed, broke a limit
    or the protocol) or SandboxUnavailable."""
    reason = check_available()
    if reason is not None:
        raise SandboxUnavailable(f"the worker cannot sandbox uploaded models: {reason}")
    t0 = time.monotonic()
    user = host_user()
    with job_folder(user, archive, {**request, "task": task}, arrays) as job, \
            confined(limits) as cgroup:
        read_fd, write_fd = os.pipe()
        try:
            proc = spawn(job, limits, user, fd=write_fd, cgroup=cgroup)
        finally:
            os.close(write_fd)
        try:
            outcome = _collect(proc, read_fd, limits, t0, progress, should_stop, poll_s)
        except SandboxError as exc:  # a process killed for memory may break anything after it
            if cgroup is not None and cgroup.oom_kills():
                raise memory_error(limits) from exc
            raise
        finally:
            os.close(read_fd)
            if proc.poll() is None:
                _kill(proc)
            if proc.stderr is not None:
                proc.stderr.close()
        if cgroup is not None and cgroup.oom_kills():  # one of its processes, not the child
            raise memory_error(limits)
    outcome.seconds = time.monotonic() - t0
    return outcome


def logged_tail(stderr: bytes) -> str:
    """The end of a sandbox's stderr as the worker logs it: the model writes it, so it is
    escaped onto one line (no forged log lines, no terminal escapes) and at most
    `STDERR_LOG_CHARS` long."""
    return escaped(stderr.decode("utf-8", "replace"))[-STDERR_LOG_CHARS:]


class _ReadGovernor:
    """Keeps the worker's reading of a sandbox's pipes to READ_CPU_BURST_S of CPU, plus
    READ_CPU_SHARE of one core, plus READ_CPU_PER_RESULT_GIB for the bytes of its result.
    The sandbox's cgroup bounds the cores its own processes use, not the worker's: a child that
    floods its pipe with tiny progress frames, or its stderr, or writes its result a byte at a
    time, had the worker's thread parse and copy on a core of its own for as long as the child
    ran (measured: 3.96 s of the worker's CPU in 4 s of a progress flood, 3.0 s in 4 s of a
    stderr flood). Past the budget the worker waits before it reads on, and the child blocks
    on its full pipe, at its own cost. What a model sends honestly (a progress frame per chunk
    or epoch, one result written whole) stays within it."""

    def __init__(self) -> None:
        self.start_cpu, self.start = time.thread_time(), time.monotonic()

    def wait_s(self, result_bytes: int) -> float:
        """Seconds to wait before reading on (0: read now)."""
        used = time.thread_time() - self.start_cpu
        allowed = READ_CPU_BURST_S + READ_CPU_SHARE * (time.monotonic() - self.start) + \
            READ_CPU_PER_RESULT_GIB * result_bytes / (1 << 30)
        return max(0.0, (used - allowed) / READ_CPU_SHARE)


def _collect(proc: subprocess.Popen, fd: int, limits: Limits, t0: float,
             progress: Callable[[int, int], None] | None,
             should_stop: Callable[[], bool] | None, poll_s: float) -> Outcome:
    outcome = Outcome()

    def limit(kind: bytes) -> int:  # one result: a second is refused from its header
        if kind != RESULT:
            return MAX_JSON_FRAME
        return 0 if frames.received[RESULT] else limits.max_result_bytes

    frames = FrameReader(fd, limit)
    stderr_tail = bytearray()
    open_fds = [fd] + ([proc.stderr.fileno()] if proc.stderr is not None else [])
    governor = _ReadGovernor()
    while open_fds:
        if should_stop is not None and should_stop():
            _kill(proc)
            raise SandboxCancelled("cancelled")
        if time.monotonic() - t0 > limits.wall_s:
            _kill(proc)
            raise SandboxError(f"the model exceeded the time limit of {limits.wall_s:g} s "
                               f"({limits.wall_what or limits.what}); its sandbox was killed")
        wait = governor.wait_s(frames.received[RESULT])
        if wait > 0:
            time.sleep(min(wait, poll_s))
            continue
        ready, _, _ = select.select(open_fds, [], [], poll_s)
        for r in ready:
            if r != fd:  # the child's stderr: kept (a tail) for the worker's log only
                chunk = os.read(r, 1 << 20)
                if not chunk:
                    open_fds.remove(r)
                stderr_tail = (stderr_tail + chunk[-4096:])[-4096:]
                continue
            try:
                completed = frames.read()
            except FrameTooLong as exc:
                _kill(proc)
                raise SandboxError(f"the sandboxed model sent {exc.length:,} bytes;"
                                   f" at most {exc.limit:,} are accepted") from None
            if completed is None:
                open_fds.remove(r)
                continue
            for kind, payload in completed:
                if kind == PROGRESS:
                    value = _json(payload, "progress")
                    done, total = value.get("done"), value.get("total")
                    if progress is not None and isinstance(done, int) and \
                            isinstance(total, int) and 0 <= done <= total:
                        progress(done, total)
                elif kind == INFO:
                    outcome.info = _json(payload, "info")
                elif kind == RESULT and outcome.result is None:
                    outcome.result = payload
                elif kind == ERROR:
                    _kill(proc)
                    raise _child_error(_json(payload, "error"), limits)
                else:
                    _kill(proc)
                    raise SandboxError("the sandboxed model broke the worker's protocol")
    code = proc.wait()
    if code != 0 or (outcome.result is None and not outcome.info):
        log.warning("sandbox exited with %s; its stderr ends (escaped): %s", code,
                    logged_tail(stderr_tail))
        if code == -signal.SIGKILL or code == 128 + signal.SIGKILL or \
                code == -signal.SIGXCPU or code == 128 + signal.SIGXCPU:
            raise SandboxError(f"the model was killed past its limits ({limits.what})")
        tail = stderr_tail.decode("utf-8", "replace")
        if "MemoryError" in tail or "allocate" in tail:
            raise memory_error(limits, "it ran out of memory")
        raise SandboxError(f"the sandboxed model exited with status {code} without a result")
    return outcome
