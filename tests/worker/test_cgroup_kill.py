"""What is left in a sandbox's cgroup is killed by pidfd (worker/sandbox_cgroup.py,
`_kill_members`): a pid read from cgroup.procs is signalled only if it is still a member once a
pidfd holds it, so a pid that exited and was reused by a process outside (the worker is root on
cgroup v1) is never killed."""

from __future__ import annotations

import os
import subprocess

import pytest

from worker.sandbox_cgroup import _kill_members

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here")


def test_only_processes_still_in_the_cgroup_are_killed() -> None:
    outsider = subprocess.Popen(["sleep", "60"])
    member = subprocess.Popen(["sleep", "60"])
    try:
        # both pids were read from cgroup.procs; by the second read only `member` is there
        _kill_members({outsider.pid, member.pid}, lambda: {member.pid})
        assert member.wait(timeout=10) == -9
        assert outsider.poll() is None, "a process outside the cgroup was killed"
        _kill_members({outsider.pid + 10**7}, lambda: {outsider.pid + 10**7})  # no such pid
    finally:
        outsider.kill()
        member.kill()
        outsider.wait()
        member.wait()
