"""Usable cores (affinity and cgroup quota, nadcore.cores) and the engine's thread cap."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nadcore.cores import affinity_cores, cgroup_cpu_limit, usable_cores

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _v2(tmp_path: Path, cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 tree under tmp_path/fs and a /proc/self/cgroup naming `cgroup`."""
    root = tmp_path / "fs"
    for rel, text in files.items():
        _write(root / rel / "cpu.max", text)
    proc = tmp_path / "cgroup"
    proc.write_text(f"0::{cgroup}\n")
    return root, proc


def test_v2_quota_of_the_process_cgroup(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/user.slice/job", {"": "max 100000",
                                                  "user.slice": "max 100000",
                                                  "user.slice/job": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.5
    assert usable_cores(root, proc) == 1


def test_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/a/b", {"a": "100000 100000", "a/b": "400000 100000"})
    assert cgroup_cpu_limit(root, proc) == 1.0


def test_v2_unlimited_leaves_the_affinity(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, "/a", {"": "max 100000", "a": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None
    assert usable_cores(root, proc) == affinity_cores()


def test_v2_namespaced_container_reads_its_root(tmp_path: Path) -> None:
    # inside a container's cgroup namespace /proc/self/cgroup says "0::/" or a path that
    # does not exist in its own mount; the mount root holds the container's quota
    root, proc = _v2(tmp_path, "/docker/0123abcd", {"": "50000 100000"})
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert usable_cores(root, proc) == 1  # a fraction of a core still runs one process


def test_v1_cfs_quota(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1\n")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    _write(root / "cpu,cpuacct" / "lab" / "cpu.cfs_quota_us", "300000\n")
    _write(root / "cpu,cpuacct" / "lab" / "cpu.cfs_period_us", "100000\n")
    proc = tmp_path / "cgroup"
    proc.write_text("5:memory:/lab\n4:cpu,cpuacct:/lab\n0::/\n")
    assert cgroup_cpu_limit(root, proc) == 3.0
    (root / "cpu,cpuacct" / "lab" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(root, proc) is None


def test_unreadable_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None
    root, proc = _v2(tmp_path, "/a", {"a": "lots of cpu"})
    assert cgroup_cpu_limit(root, proc) is None


def test_this_machine_counts_the_affinity_mask() -> None:
    assert affinity_cores() == len(os.sched_getaffinity(0))
    assert 1 <= usable_cores() <= affinity_cores()


PROGRAM = """
import os, sys, torch
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
torch.set_num_threads(int(sys.argv[1]))
from nadcore import NADSpec, compute_shard
from nadcore.cores import usable_cores
part = compute_shard(NADSpec(architecture="logreg", input_shape=(1, 4, 4), num_networks=2), 0, 2)
print(usable_cores(), torch.get_num_threads(), part.meta["plan"]["threads"])
"""


@pytest.mark.parametrize("asked", [4, 1])
def test_engine_caps_its_threads_at_the_usable_cores(asked: int) -> None:
    """A process pinned to one core that asked torch for 4 threads runs the shard with 1 (and
    records it in the plan); one that asked for 1 keeps 1."""
    out = subprocess.run([sys.executable, "-c", PROGRAM, str(asked)], cwd=ROOT, text=True,
                         capture_output=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "1"]
