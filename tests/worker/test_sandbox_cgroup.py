"""The sandbox's own cgroup (worker/sandbox_cgroup.py), with layer one off: attacker Python runs
directly as the sandboxed child, as in tests/worker/test_sandbox_escape.py.

Each attack is run twice: in the cgroup, where it is stopped, and as a control without it
(`cgroup=None`: what a worker that can make none has), where the same code gets through; the
rlimits stay on both times, so that the control shows what they alone let through. The limits
are small (256 MiB, the 64 tasks) to keep the controls light on the machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from worker import sandbox, sandbox_cgroup

LIMITS = sandbox.Limits(wall_s=60, memory_bytes=256 << 20, scratch_bytes=512 << 20)
ROOT = sandbox.HostUser("root", 0, 0, drop=False)

pytestmark = [
    pytest.mark.skipif(sandbox.check_available() is not None,
                       reason=f"no sandbox here: {sandbox.check_available()}"),
    pytest.mark.skipif(sandbox_cgroup.available() is None,
                       reason=f"no cgroup per sandbox here: {sandbox_cgroup.why_unavailable()}"),
]


@dataclass
class Run:
    out: dict | None  # the JSON object the child printed last, if it lived to print one
    returncode: int
    oom_kills: int
    folders: list[Path]  # the sandbox's cgroup folders (none without a cgroup)
    throttled: int = 0  # CPU quota periods in which the kernel held it back


def run(code: str, *, cgroup: bool = True, child: list[str] | None = None,
        user: sandbox.HostUser | None = None,
        command: Callable[[list[str]], list[str]] | None = None,
        cores: float | None = None) -> Run:
    """Runs `code` as the sandboxed child, in its own cgroup unless `cgroup` is false (with a
    CPU quota of `cores` instead of LIMITS' threads where given); FOLDERS in the code are the
    cgroup's folders on the host."""
    user = user or sandbox.host_user()
    made = contextlib.nullcontext() if not cgroup else sandbox.confined(LIMITS) \
        if cores is None else sandbox_cgroup.confined(
            LIMITS.memory_bytes, sandbox.process_limit(LIMITS) + sandbox.BWRAP_TASKS, cores)
    with sandbox.job_folder(user, None, {"task": "test"}) as job, made as group:
        folders = list(group.folders) if group is not None else []
        code = f"FOLDERS = {[str(f) for f in folders]!r}\n" + code
        proc = sandbox.spawn(job, LIMITS, user, stdout=subprocess.PIPE, cgroup=group,
                             command=command,
                             child=(child or sandbox.python_child(LIMITS)) + ["-c", code])
        out, err = proc.communicate(timeout=120)
        kills = group.oom_kills() if group is not None else 0
        throttled = group.throttled_periods() if group is not None else 0
    lines = out.decode().strip().splitlines()
    return Run(json.loads(lines[-1]) if lines else None, proc.returncode, kills, folders,
               throttled)


# -- memory that no rlimit counts ---------------------------------------------------------
SHARED = """
import json, mmap, os, time
SIZE = 200 << 20
def fill():  # shared anonymous memory: not heap (RLIMIT_DATA), within RLIMIT_AS per process
    m = mmap.mmap(-1, SIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    for i in range(0, SIZE, 4096):
        m[i] = 1
    return m
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        fill(); time.sleep(3); os._exit(0)
    kids.append(pid)
m = fill()
statuses = [os.waitpid(pid, 0)[1] for pid in kids]
print(json.dumps({'filled': 3 * SIZE, 'children': statuses}))
"""


def test_shared_memory_of_several_processes_is_bounded_together() -> None:
    """Three processes each map and touch 200 MiB of MAP_SHARED | MAP_ANONYMOUS memory: each is
    within its own rlimits, together they are 600 MiB of a 256 MiB limit. In the cgroup the
    kernel kills the sandbox; without it all 600 MiB are held."""
    got = run(SHARED)
    assert got.oom_kills > 0, got
    assert got.out is None or any(got.out["children"]), got  # not everyone lived
    assert all(not f.exists() for f in got.folders), got.folders  # removed once it ended
    # control: without the cgroup the same processes hold all of it
    free = run(SHARED, cgroup=False)
    assert free.returncode == 0 and free.out == {"filled": 600 << 20, "children": [0, 0]}, free


TMPFS = """
import json
written = 0
try:
    for n in range(4):  # RLIMIT_FSIZE bounds a file, not the folder
        with open(f'/tmp/fill{n}', 'wb') as f:
            for _ in range(100):
                f.write(b'x' * (1 << 20)); f.flush(); written += 1 << 20
except OSError as exc:
    print(json.dumps({'written': written, 'error': exc.errno}))
else:
    print(json.dumps({'written': written}))
"""


def test_files_in_its_tmpfs_count_against_its_memory() -> None:
    """400 MiB written in its scratch `/tmp` (a tmpfs of 512 MiB here: shared memory by
    another name) do not fit in 256 MiB of memory."""
    got = run(TMPFS)
    assert got.oom_kills > 0 and got.out is None, got  # the kernel killed it mid-write
    free = run(TMPFS, cgroup=False)
    assert free.out == {"written": 400 << 20}, free


# -- processes ---------------------------------------------------------------------------------
FORK_BOMB = """
import json, os, time
failed = 0
for _ in range(7):  # each process forks at each round: 128 processes where nothing stops it
    try:
        os.fork()
    except OSError:
        failed += 1
if os.getpid() != 1:
    time.sleep(3); os._exit(0)
time.sleep(1.5)
print(json.dumps({'processes': sum(p.isdigit() for p in os.listdir('/proc'))}))
"""


def test_a_fork_bomb_stops_at_the_task_limit() -> None:
    """With RLIMIT_NPROC taken away (the child started without prlimit), only the cgroup's
    pids.max stands between a fork bomb and the host."""
    bare = [sys.executable, "-I"]
    limit = sandbox.process_limit(LIMITS) + sandbox.BWRAP_TASKS
    got = run(FORK_BOMB, child=bare)
    assert got.out is not None and got.out["processes"] <= limit, got
    assert all(not f.exists() for f in got.folders), got.folders
    free = run(FORK_BOMB, child=bare, cgroup=False)
    assert free.out == {"processes": 128}, free


# -- cores ---------------------------------------------------------------------------------
BUSY = """
import json, os, resource, time
start = time.monotonic()
kids = []
for _ in range(4):  # four busy processes: each within its own RLIMIT_CPU
    pid = os.fork()
    if pid == 0:
        while time.monotonic() - start < 2.0:
            pass
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({'cores': (used.ru_utime + used.ru_stime) / (time.monotonic() - start)}))
"""


def test_busy_processes_get_the_sandboxs_cores_and_no_more() -> None:
    """Four processes spin for 2 s: RLIMIT_CPU counts each one's seconds, not the cores they
    hold together. Under a quota of a tenth of a core they get a tenth (the kernel throttles
    them); without the cgroup the same code takes what the machine gives (1.92 cores on an
    idle 2-core machine, 0.46 beside a full test run: twice the quota is the control's bar).
    A shard's sandbox gets its threads' cores."""
    node = sandbox_cgroup.available()
    assert node is not None
    if node.cpu is None:
        pytest.skip(f"no cpu controller for the sandboxes here ({node.describe()})")
    got = run(BUSY, cores=0.1)
    assert got.out is not None and got.out["cores"] < 0.1 * 1.3, got
    assert got.throttled > 0, got
    free = run(BUSY, cgroup=False)
    assert free.out is not None and free.out["cores"] > 0.2, free
    with sandbox.confined(dataclasses.replace(LIMITS, threads=2)) as group:
        assert group is not None
        folder = group.folders[-1]
        quota = (folder / "cpu.max").read_text().split() if node.version == 2 else \
            [(folder / f"cpu.cfs_{name}_us").read_text().strip() for name in ("quota", "period")]
        assert quota == ["200000", "100000"], quota


def test_a_quota_the_kernel_refuses_leaves_the_sandbox_its_other_bounds(
        caplog: pytest.LogCaptureFixture) -> None:
    """cgroup v1 refuses a quota above an ancestor's (a container given half a core, a sandbox
    of one thread): the sandbox's cgroup is made without it, its memory and task bounds kept,
    and the worker's log says so (before, every sandbox failed to start)."""
    node = sandbox_cgroup.available()
    assert node is not None
    if node.cpu is None or node.version != 1:
        pytest.skip(f"needs cgroup v1's cpu controller ({node.describe()})")
    parent = node.cpu / f"{os.getpid()}-test-half-core"
    parent.mkdir()
    try:
        (parent / "cpu.cfs_quota_us").write_text("50000")
        child = parent / "sandbox"
        child.mkdir()
        try:
            sandbox_cgroup._set_quota(1, child, 1.0)
            assert (child / "cpu.cfs_quota_us").read_text().strip() == "-1"
        finally:
            child.rmdir()
    finally:
        parent.rmdir()
    assert any("no CPU quota of 1 core(s): Invalid argument" in r.getMessage()
               for r in caplog.records), caplog.text


# -- its own limits --------------------------------------------------------------------------
WRITE_LIMITS = """
import errno, json, os
out = {}
for folder in FOLDERS + [os.path.dirname(FOLDERS[0])]:  # its own cgroups, and the node above
    for name in ('memory.max', 'memory.limit_in_bytes', 'memory.memsw.limit_in_bytes',
                 'memory.swap.max', 'pids.max', 'cgroup.procs', 'cpu.max',
                 'cpu.cfs_quota_us', 'cpu.cfs_period_us', 'cpu.shares', 'cpu.weight'):
        path = os.path.join(folder, name)
        try:  # opening for writing is the check; nothing is written
            os.close(os.open(path, os.O_WRONLY))
            out[path] = 'writable'
        except FileNotFoundError:  # not a file of this cgroup version
            continue
        except OSError as exc:  # EACCES also where the node's folder cannot be searched
            out[path] = exc.errno  # (made 0700 by a worker whose umask is 077)
print(json.dumps(out))
"""


def _with_sys(option: str) -> Callable[[list[str]], list[str]]:
    """Binds the host's /sys into the sandbox (as a GPU worker's read-only one is)."""
    def rewrite(cmd: list[str]) -> list[str]:
        i = cmd.index("--seccomp")
        return [*cmd[:i], option, "/sys", "/sys", *cmd[i:]]
    return rewrite


def test_the_sandbox_cannot_raise_its_limits_or_leave_its_cgroup() -> None:
    """Even with the host's /sys bound in (read-only, as on a GPU worker), no file of its
    cgroup or of the node above opens for writing, from inside or as its host user outside;
    a CPU worker's sandbox has no /sys at all."""
    plain = run("import json, os\nprint(json.dumps({'sys': os.listdir('/sys') "
                "if os.path.exists('/sys') else None}))")
    assert plain.out == {"sys": None} or sandbox._gpu_nodes(), plain
    got = run(WRITE_LIMITS, command=_with_sys("--ro-bind"))
    assert got.out and set(got.out.values()) <= {errno.EACCES, errno.EROFS}, got
    user = sandbox.host_user()
    if user.drop:  # as nads-sandbox on the host, outside bwrap: the files are root's
        with sandbox.confined(LIMITS) as group:
            assert group is not None
            folders = [str(f) for f in group.folders]
            done = subprocess.run([sys.executable, "-I", "-c",
                                   f"FOLDERS = {folders!r}\n" + WRITE_LIMITS],
                                  capture_output=True, text=True, timeout=60, env={},
                                  user=user.uid, group=user.gid, extra_groups=[])
        assert done.returncode == 0, done.stderr
        outside = json.loads(done.stdout)
        assert any(path.startswith(folders[0] + "/") for path in outside), outside
        assert set(outside.values()) == {errno.EACCES}, outside
    if os.geteuid() == 0:  # control: host root with /sys writable could raise them
        opened = run(WRITE_LIMITS, user=ROOT, command=_with_sys("--bind"))
        assert opened.out and "writable" in opened.out.values(), opened


def test_the_node_is_the_workers_alone() -> None:
    """The node is the worker's and only it can search it, whatever the umask of the process
    that made it first (a sandbox that sees /sys cannot list the other sandboxes' cgroups)."""
    node = sandbox_cgroup.available()
    assert node is not None
    folders = node.folders()
    for folder in folders:
        folder.chmod(0o755)  # as a worker at umask 022 made it before
    made = sandbox_cgroup._v2_node if node.version == 2 else sandbox_cgroup._v1_node
    assert made().folders() == folders
    for folder in folders:
        st = folder.stat()
        assert st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0, (folder, oct(st.st_mode))


def test_a_worker_that_cannot_make_one_says_which_bound_holds() -> None:
    """A non-root worker without a delegated cgroup (here: the sandbox's own user, for whom the
    root's node is not writable) falls back to the rlimits and its start-up line says so."""
    user = sandbox.host_user()
    if not user.drop:
        pytest.skip("needs a root worker to run as another user")
    root = Path(sandbox_cgroup.__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", "from worker.sandbox import bounds; "
                           "print(bounds())"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(root)}, cwd="/", user=user.uid,
                          group=user.gid, extra_groups=[])
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip()
    assert line.startswith("no cgroup per sandbox (") and "Permission denied" in line, line
    assert "RLIMIT_DATA (heap) per process" in line and "each of a sandbox's processes may " \
        "hold the limit" in line, line
