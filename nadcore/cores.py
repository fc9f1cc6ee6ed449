"""How many CPU cores this process may use: its affinity mask and its cgroup CPU quota.

Not `os.cpu_count()`, which counts the machine's cores: a container limited to 2 CPUs on a
64-core host sees 64 there, and 32 intra-op threads per process collapse on 2 cores.
Standard library only (no torch): the API side and `nads serve` use it too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def affinity_cores() -> int:
    """Cores in this process's CPU affinity mask (os.cpu_count() where there is none)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _ancestors(root: Path, path: str) -> list[Path]:
    """root/path, its parents, ..., root (the quota of any of them applies)."""
    parts = [p for p in path.strip("/").split("/") if p]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(text: str) -> float | None:
    """`cpu.max`: "max 100000" (no limit) or "<quota> <period>" in microseconds."""
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    return int(fields[0]) / int(fields[1])


def _v2_read(directory: Path) -> float | None:
    return _v2_quota((directory / "cpu.max").read_text())


def _v1_read(directory: Path) -> float | None:
    quota = int((directory / "cpu.cfs_quota_us").read_text())
    period = int((directory / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in cores, may be fractional) on this process's cgroup and its
    ancestors, cgroup v2 (`cpu.max`) or v1 (`cpu/cpu.cfs_quota_us`); None when unlimited or
    unreadable."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            dirs, read = _ancestors(root, path), _v2_read
        elif "cpu" in controllers.split(","):
            mount = next((root / c for c in (controllers, "cpu,cpuacct", "cpu")
                          if (root / c).is_dir()), None)
            if mount is None:
                continue
            dirs, read = _ancestors(mount, path), _v1_read
        else:
            continue
        for directory in dirs:  # a namespaced container sees its own cgroup as the root
            try:
                value = read(directory)
            except (OSError, ValueError):
                continue
            if value is not None:
                limits.append(value)
    return min(limits) if limits else None


def usable_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """Whole cores this process may keep busy: min(affinity, floor(quota)), at least 1."""
    cores = affinity_cores()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, math.floor(quota + 1e-9))
    return max(1, cores)
