"""One memory, pids and CPU cgroup per sandbox, where the worker can make one.

RLIMIT_DATA and RLIMIT_AS are per process and leave gaps: shared memory is not heap, a GPU
worker sets no RLIMIT_AS (CUDA reserves address space by the terabyte), and 64 processes may
each hold the limit. A cgroup counts what the sandbox's processes together charge to memory
(anonymous, shared memory and tmpfs pages, page cache they bring in, kernel memory) and
swap, and every task (threads included) against one bound each. RLIMIT_CPU bounds each
process's CPU seconds, not the cores a sandbox holds at once: a shard given one thread could
run 64 busy processes on every core of the node for its wall time, taking them from the other
worker processes' jobs. Where the cpu controller can be had too, each sandbox's cgroup gets a
CPU quota of its threads' cores (the cores its worker process was given). The worker:

- finds its own cgroup in /proc/self/cgroup and the hierarchy's mount in /proc/self/mountinfo;
- cgroup v2: needs a hierarchy with the memory and pids controllers and its own cgroup
  writable (root, or a subtree delegated to the worker's user). A cgroup with controllers for
  its children holds no process itself, so the first time the worker moves the processes of its
  own cgroup into a leaf `nads-worker` beside the sandboxes' node, then enables memory and pids
  for its children and for `nads-sandbox` below it;
- cgroup v1: a memory and a pids hierarchy, the node `nads-sandbox` below its own cgroup in each;
- the cpu controller is optional (v2: enabled beside memory and pids where it can be; v1: the
  node in the cpu hierarchy too): without it the sandboxes keep the other bounds, and the
  worker's start-up line says that no CPU quota holds;
- per sandbox, a child of the node: memory.max (v1 memory.limit_in_bytes) = the sandbox's
  memory limit, no swap (memory.swap.max = 0; v1 memory.memsw.limit_in_bytes = the limit where
  the kernel accounts swap), pids.max, and on v2 memory.oom.group (an OOM kills the whole
  sandbox, not one of its processes); its cores as a quota per 100 ms period (v2 cpu.max, v1
  cpu.cfs_quota_us);
- puts the sandbox in it before bwrap runs: the files are opened by the worker, and the child
  writes its own pid into them between fork and exec (`join`, from Popen's preexec_fn), so that
  bwrap and everything it starts are born inside; no moment exists in which sandboxed code runs
  outside;
- afterwards kills whatever is left in it (`cgroup.kill` on v2; on v1 by pidfd, each process
  checked to be a member still, so that a reused pid is never killed) and removes it.

The cgroups are the worker's (root's, or the delegated user's), the node mode 0700 (no other
user lists the sandboxes' cgroups), the files below 0644: the sandbox's host user
(`nads-sandbox`, or a non-root worker's own uid inside bwrap, which mounts no /sys on a CPU
worker and a read-only one on a GPU worker) can neither raise its limits nor move itself out.
Where none of this can be made (a non-root worker without a delegated subtree, Docker's
read-only cgroupfs), `available()` says why and the sandbox keeps its rlimits alone.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from nadcore.cores import usable_cores

NODE = "nads-sandbox"  # below the worker's own cgroup: every sandbox's cgroup is its child
WORKER_LEAF = "nads-worker"  # v2: where the worker's own processes move (no internal processes)
CONTROLLERS = ("memory", "pids")  # required; "cpu" is taken where it can be (`Node.cpu`)
CPU_PERIOD_US = 100_000  # the quota's period: the kernel's default
V1_SHARES_PER_CORE = 1024  # a nice-0 task's weight (see _v1_cpu_node; the kernel clamps at 2**18)
REMOVE_WAIT_S = 10.0

log = logging.getLogger(__name__)


class CgroupUnavailable(RuntimeError):
    """No per-sandbox cgroup can be made here; the message says why."""


@dataclass(frozen=True)
class Node:
    """Where the sandboxes' cgroups are made: `memory`, `pids` and `cpu` are the same folder on
    v2; `cpu` is None where no CPU quota can be set."""

    version: int
    memory: Path
    pids: Path
    cpu: Path | None = None

    def describe(self) -> str:
        quota = "" if self.cpu is not None else ", no cpu controller (no CPU quota)"
        if self.version == 2:
            return f"cgroup v2 under {self.memory}{quota}"
        cpu = f", {self.cpu}" if self.cpu is not None else ""
        return f"cgroup v1 under {self.memory}, {self.pids}{cpu}{quota}"

    def folders(self) -> set[Path]:
        return {self.memory, self.pids} | ({self.cpu} if self.cpu is not None else set())


# -- finding the hierarchies ---------------------------------------------------------------
def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def _mounts() -> list[tuple[str, Path, str, set[str]]]:
    """(root inside the hierarchy, mount point, fstype, super options) of each cgroup mount."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((_unescape(fields[3]), Path(_unescape(fields[4])), tail[0],
                          set(tail[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for the v2 hierarchy) -> this process's cgroup path in it."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if number == "0" and controllers == "":
            own[""] = path
        for controller in controllers.split(","):
            if controller:
                own[controller] = path
    return own


def _folder(mount_root: str, mount_point: Path, path: str) -> Path | None:
    """The folder of cgroup `path` under a mount of the hierarchy's `mount_root`."""
    root = mount_root.rstrip("/")
    if path != root and not path.startswith(root + "/"):
        return None  # this mount shows another part of the hierarchy
    return mount_point / path[len(root):].lstrip("/")


def _write(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _v2_node() -> Node:
    own = _own_cgroups()
    mounts = [m for m in _mounts() if m[2] == "cgroup2"]
    if "" not in own or not mounts:
        raise CgroupUnavailable("no cgroup v2 hierarchy")
    for mount_root, point, _, _ in mounts:
        here = _folder(mount_root, point, own[""])
        if here is not None and (here / "cgroup.controllers").is_file():
            break
    else:
        raise CgroupUnavailable(f"the worker's cgroup v2 {own['']!r} is not under a mount")
    if here.name == WORKER_LEAF and (here.parent / NODE).is_dir():
        here = here.parent  # an earlier worker process moved this one's processes there
    missing = set(CONTROLLERS) - set((here / "cgroup.controllers").read_text().split())
    if missing:
        raise CgroupUnavailable(f"cgroup v2 {here}: no {' or '.join(sorted(missing))} "
                                "controller (not delegated to it)")
    enabled = set((here / "cgroup.subtree_control").read_text().split())
    try:
        if not set(CONTROLLERS) <= enabled:
            if (here / "cgroup.type").exists():  # not the root: no processes beside controllers
                _move_processes(here, here / WORKER_LEAF)
            _write(here / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
        node = here / NODE
        _make_private(node)
        _write(node / "cgroup.subtree_control", " ".join(f"+{c}" for c in CONTROLLERS))
    except OSError as exc:
        raise CgroupUnavailable(f"cgroup v2 {here} is not writable by the worker "
                                f"({exc.strerror})") from None
    return Node(2, node, node, node if _v2_enable_cpu(here, node) else None)


def _v2_enable_cpu(here: Path, node: Path) -> bool:
    """The cpu controller for the node's children, where `here` has it to give (not delegated,
    or refused while a realtime task runs in the subtree: then no CPU quota). The node and the
    worker's leaf are siblings of equal weight: neither starves the other's share."""
    if "cpu" not in (here / "cgroup.controllers").read_text().split():
        return False
    try:
        for folder in (here, node):
            if "cpu" not in (folder / "cgroup.subtree_control").read_text().split():
                _write(folder / "cgroup.subtree_control", "+cpu")
    except OSError:
        return False
    return True


def _make_private(node: Path) -> None:
    """The node, searchable by the worker's user only (whatever the umask of the process that
    makes it: `nads serve` runs at 077, a plain worker at 022): a sandbox that sees the host's
    /sys (read-only on a GPU worker) cannot even list the cgroups of the other sandboxes. The
    worker moves a sandbox's child in through a descriptor it opened (`join`), never by path."""
    node.mkdir(mode=0o700, exist_ok=True)
    if node.stat().st_mode & 0o077:
        node.chmod(0o700)


def _move_processes(source: Path, leaf: Path) -> None:
    """Every process of `source` into its child `leaf` (moving one may race with a fork)."""
    leaf.mkdir(exist_ok=True)
    for _ in range(10):
        pids = (source / "cgroup.procs").read_text().split()
        if not pids:
            return
        for pid in pids:
            try:
                _write(leaf / "cgroup.procs", pid)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
    raise CgroupUnavailable(f"cgroup v2 {source}: its processes could not all be moved")


def _v1_node() -> Node:
    own = _own_cgroups()
    folders: dict[str, Path] = {}
    for controller in CONTROLLERS:
        for mount_root, point, fstype, options in _mounts():
            if fstype == "cgroup" and controller in options and controller in own:
                here = _folder(mount_root, point, own[controller])
                if here is not None and here.is_dir():
                    folders[controller] = here / NODE
                    break
        else:
            raise CgroupUnavailable(f"no cgroup v1 {controller} hierarchy")
    try:
        for folder in folders.values():
            _make_private(folder)
    except OSError as exc:
        raise CgroupUnavailable(f"cgroup v1 {folder.parent} is not writable by the worker "
                                f"({exc.strerror})") from None
    return Node(1, folders["memory"], folders["pids"], _v1_cpu_node(own))


def _v1_cpu_node(own: dict[str, str]) -> Path | None:
    """The node in the cpu hierarchy, where there is one the worker may write (else None).

    In v1 a cgroup competes with the tasks beside it as one task of its cpu.shares (1024: one
    nice-0 task), so the node, which holds every sandbox of the worker, gets the weight of one
    nice-0 task per usable core: on a busy machine the sandboxes together keep the share their
    threads would have had outside it."""
    for mount_root, point, fstype, options in _mounts():
        if fstype == "cgroup" and "cpu" in options and "cpu" in own:
            here = _folder(mount_root, point, own["cpu"])
            if here is not None and (here / "cpu.cfs_quota_us").is_file():
                node = here / NODE
                try:
                    _make_private(node)
                    _write(node / "cpu.shares", str(V1_SHARES_PER_CORE * usable_cores()))
                except OSError:
                    return None
                return node
    return None


@lru_cache(maxsize=1)
def _node() -> Node | str:
    """The node (made once per process), or why there is none."""
    reasons = []
    for find in (_v2_node, _v1_node):
        try:
            node = find()
        except (CgroupUnavailable, OSError) as exc:
            reasons.append(str(exc))
            continue
        try:  # a child with every limit written, removed at once: what each sandbox will need
            SandboxCgroup.create(node, 1 << 30, 64, 1.0).remove()
        except OSError as exc:
            reasons.append(f"{node.describe()}: a sandbox's cgroup cannot be made "
                           f"({exc.strerror}: {exc.filename})")
            continue
        _sweep(node)
        return node
    return "; ".join(reasons)


def available() -> Node | None:
    return node if isinstance(node := _node(), Node) else None


def why_unavailable() -> str | None:
    node = _node()
    return None if isinstance(node, Node) else node


def _sweep(node: Node) -> None:
    """Removes the empty cgroups that sandboxes of a worker process no longer alive left."""
    for folder in node.folders():
        for child in folder.iterdir():
            pid = child.name.split("-")[0]
            if child.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(OSError):
                    child.rmdir()


# -- one sandbox's cgroup ------------------------------------------------------------------
@dataclass
class SandboxCgroup:
    node: Node
    folders: tuple[Path, ...]  # one on v2; on v1 the memory, the pids and the cpu cgroup
    memory_bytes: int
    processes: int
    cores: float  # its CPU quota, where the node has the cpu controller

    @classmethod
    def create(cls, node: Node, memory_bytes: int, processes: int,
               cores: float) -> SandboxCgroup:
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"  # the pid: see _sweep
        memory, pids = node.memory / name, node.pids / name
        cpu = node.cpu / name if node.cpu is not None else None
        folders = tuple(dict.fromkeys(f for f in (memory, pids, cpu) if f is not None))
        group = cls(node, (), memory_bytes, processes, cores)
        try:
            for folder in folders:
                folder.mkdir()
                group.folders += (folder,)
            if node.version == 2:
                _write(memory / "memory.max", str(memory_bytes))
                if (memory / "memory.swap.max").exists():
                    _write(memory / "memory.swap.max", "0")
                _write(memory / "memory.oom.group", "1")
            else:
                _write(memory / "memory.limit_in_bytes", str(memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
                else:  # the kernel does not account swap (swapaccount=0): swap as little as can be
                    _write(memory / "memory.swappiness", "0")
            _write(pids / "pids.max", str(processes))
            if cpu is not None:
                _set_quota(node.version, cpu, cores)
        except BaseException:
            group.remove()
            raise
        return group

    def open_procs(self) -> list[int]:
        """Write-only descriptors of each cgroup's cgroup.procs, opened by the worker (close-on-
        exec: bwrap never holds them), for `join` in the child."""
        return [os.open(folder / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
                for folder in self.folders]

    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for want of memory."""
        name = "memory.events" if self.node.version == 2 else "memory.oom_control"
        with contextlib.suppress(OSError):
            for line in (self.folders[0] / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def throttled_periods(self) -> int:
        """Periods in which the kernel held the sandbox back at its CPU quota (0 without one)."""
        if self.node.cpu is None:
            return 0
        with contextlib.suppress(OSError):
            for line in (self.folders[-1] / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "nr_throttled":
                    return int(value)
        return 0

    def _pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            with contextlib.suppress(FileNotFoundError):
                found |= {int(p) for p in (folder / "cgroup.procs").read_text().split()}
        return found

    def remove(self) -> None:
        """Kills every process left inside, then removes the cgroup."""
        deadline = time.monotonic() + REMOVE_WAIT_S
        for folder in self.folders:
            kill = folder / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    _write(kill, "1")
        while (pids := self._pids()) and time.monotonic() < deadline:
            _kill_members(pids, self._pids)
            time.sleep(0.02)
        for folder in self.folders:
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY while the last tasks finish exiting
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        log.warning("sandbox cgroup %s left behind: %s", folder, exc.strerror)
                        break
                    time.sleep(0.02)


def _set_quota(version: int, folder: Path, cores: float) -> None:
    """`cores` as the cgroup's CPU quota. Where the kernel refuses it (v1: a quota above an
    ancestor's, as in a container given fewer CPUs than the worker's threads), the sandbox runs
    without one, its other bounds kept, and the worker's log says so."""
    quota = max(1000, round(cores * CPU_PERIOD_US))  # the kernel's least: 1 ms
    try:
        if version == 2:
            _write(folder / "cpu.max", f"{quota} {CPU_PERIOD_US}")
        else:
            _write(folder / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(folder / "cpu.cfs_quota_us", str(quota))
    except OSError as exc:
        log.warning("sandbox cgroup %s: no CPU quota of %g core(s): %s", folder, cores,
                    exc.strerror)


def _kill_members(pids: set[int], members: Callable[[], set[int]]) -> None:
    """SIGKILL to the processes `pids` that are still `members()` once a pidfd holds each: a
    pid read from cgroup.procs may have exited and been given to a process outside the
    cgroup (a pid is reused, a pidfd names one process), which the worker, root on cgroup v1,
    must not kill. Where pidfds are missing (Linux before 5.3), plain kill by pid."""
    if not hasattr(os, "pidfd_open"):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return
    held: dict[int, int] = {}
    try:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                held[pid] = os.pidfd_open(pid)
        still = members()  # read after the pidfds: a member now is the process its fd names
        for pid, fd in held.items():
            if pid in still:
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in held.values():
            os.close(fd)


def join(descriptors: list[int]) -> None:
    """In the child, between fork and exec: moves this process into the cgroup."""
    pid = str(os.getpid()).encode()
    for fd in descriptors:
        os.write(fd, pid)


@contextlib.contextmanager
def confined(memory_bytes: int, processes: int,
             cores: float) -> Iterator[SandboxCgroup | None]:
    """A fresh cgroup for one sandbox (None where none can be made), removed on leaving."""
    node = available()
    if node is None:
        yield None
        return
    group = SandboxCgroup.create(node, memory_bytes, processes, cores)
    try:
        yield group
    finally:
        group.remove()
