"""The sandbox with layer one turned off: attacker Python runs directly as the sandboxed child
(worker.sandbox.spawn with `python -I -c CODE` in place of `nadcore.uploaded.isolated`: what a
pickled weight or a hostile `__setstate__` would get), and every attack fails from inside. The entry
point is `spawn(child=...)`, which the API cannot reach (it only queues tasks of
nadcore.uploaded.isolated by name).

Where a protection could be taken away without making the attack succeed, a control runs the
same probe with the protection removed (`command=` rewrites bwrap's command line, or the
worker's root user is kept) and shows that the probe then sees the attack succeed: these tests
can fail.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import nadcore
from tests.listener import Listener
from worker import sandbox, seccomp

LIMITS = sandbox.Limits(wall_s=60, memory_bytes=1 << 30, scratch_bytes=64 << 20)
ROOT = sandbox.HostUser("root", 0, 0, drop=False)
HWPOISON = 133  # EHWPOISON: no system call here returns it

pytestmark = pytest.mark.skipif(sandbox.check_available() is not None,
                                reason=f"no sandbox here: {sandbox.check_available()}")


def run_inside(code: str, *, user: sandbox.HostUser | None = None,
               command: Callable[[list[str]], list[str]] | None = None,
               while_running: Callable[[subprocess.Popen], object] | None = None) -> dict:
    """Runs `code` as the sandboxed child (in its cgroup, where the worker can make one, as a
    model runs: tests/worker/test_sandbox_cgroup.py shows what that adds); returns the JSON
    object it prints last."""
    user = user or sandbox.host_user()
    with sandbox.job_folder(user, None, {"task": "test"}) as job, \
            sandbox.confined(LIMITS) as cgroup:
        proc = sandbox.spawn(job, LIMITS, user, stdout=subprocess.PIPE, command=command,
                             child=sandbox.python_child(LIMITS, "-c", code), cgroup=cgroup)
        seen = while_running(proc) if while_running else None
        out, err = proc.communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    result = json.loads(lines[-1])
    if seen is not None:
        result["seen_from_host"] = seen
    return result


def _without(option: str, *values: str) -> Callable[[list[str]], list[str]]:
    """A command rewrite that drops `option VALUES...` wherever it appears."""
    def rewrite(cmd: list[str]) -> list[str]:
        n = 1 + len(values)
        out, i = [], 0
        while i < len(cmd):
            if cmd[i:i + n] == [option, *values]:
                i += n
                continue
            out.append(cmd[i])
            i += 1
        return out
    return rewrite


# -- who the sandbox is -----------------------------------------------------------------------
def _host_uid_of_child(proc: subprocess.Popen) -> int:
    """The host uid of the sandboxed child (bwrap's child), read from the host's /proc."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if kids:
            status = Path(f"/proc/{kids[0]}/status").read_text()
            return int(next(line for line in status.splitlines()
                            if line.startswith("Uid:")).split()[1])
        time.sleep(0.05)
    raise AssertionError("the sandboxed child never started")


SLEEP_AND_REPORT = """
import json, os, time
time.sleep(1.5)
status = open('/proc/self/status').read()
print(json.dumps({'uid': os.getuid(), 'uid_map': open('/proc/self/uid_map').read().split()}))
"""


def test_the_sandbox_is_never_host_root() -> None:
    """Inside it is uid 65534; on the host it is the sandbox user (the dedicated
    `nads-sandbox` when the worker is root). Inside, /proc/self/uid_map reads `65534 0 1`
    either way: --disable-userns nests one more user namespace, whose uid 0 is the outer one's
    (itself the host user): the host's view is the one that tells."""
    user = sandbox.host_user()
    got = run_inside(SLEEP_AND_REPORT, while_running=_host_uid_of_child)
    assert got["uid"] == sandbox.SANDBOX_UID
    assert got["seen_from_host"] == user.uid != 0
    if os.geteuid() == 0:
        assert user.drop and user.name == "nads-sandbox"
    # control: without the drop, a root worker's sandbox is host root
    if os.geteuid() == 0:
        assert run_inside(SLEEP_AND_REPORT, user=ROOT,
                          while_running=_host_uid_of_child)["seen_from_host"] == 0


def test_a_root_worker_without_the_user_refuses() -> None:
    if os.geteuid() != 0:
        pytest.skip("the worker is not root here")
    with pytest.raises(sandbox.SandboxUnavailable, match="NADS_SANDBOX_USER.*does not exist"):
        sandbox.host_user("no-such-sandbox-user")


def test_unreadable_parents_are_named() -> None:
    """A folder the sandbox user cannot search is named with its mode (CI clones anywhere)."""
    if os.geteuid() != 0:
        pytest.skip("needs a root worker dropping to another user")
    user = sandbox.host_user()
    base = Path(os.environ.get("TMPDIR", "/tmp"))
    hidden = base / f"nads-hidden-{os.getpid()}"
    (hidden / "inner").mkdir(parents=True)
    try:
        hidden.chmod(0o700)
        problems = sandbox.unreachable(user, [hidden / "inner", Path(sys.base_prefix)])
        assert problems == [f"{hidden} (mode 0700, owner uid 0) keeps nads-sandbox from "
                            f"reading {hidden / 'inner'}"]
    finally:
        (hidden / "inner").rmdir()
        hidden.rmdir()


# -- /proc and the environment --------------------------------------------------------------------
PROC = """
import json, os
out = {'pid': os.getpid()}
pattern = open('/proc/sys/kernel/core_pattern').read()
try:
    with open('/proc/sys/kernel/core_pattern', 'w') as f:  # the same value: harmless if it works
        f.write(pattern)
    out['sysctl'] = 'written'
except OSError as exc:
    out['sysctl'] = exc.errno
out['environ'] = open('/proc/1/environ', 'rb').read().decode()
out['pids'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print(json.dumps(out))
"""


def test_proc_is_the_sandboxs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary-aws-secret")
    monkeypatch.setenv("NADS_DATABASE_URL", "postgresql://nads:canary-password@db/nads")
    got = run_inside(PROC)
    assert got["sysctl"] == errno.EROFS  # /proc/sys is bound read-only
    assert got["pid"] == 1 and got["pids"] == [1]  # no other process, bwrap's included
    assert "canary" not in got["environ"] and "NADS_" not in got["environ"]
    assert set(dict(v.split("=", 1) for v in got["environ"].split("\0") if v)) <= {
        "PATH", "HOME", "TMPDIR", "LANG", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS", "PYTHONDONTWRITEBYTECODE", "OMP_WAIT_POLICY", "PWD",
        "CUDA_VISIBLE_DEVICES"}


# -- the network ---------------------------------------------------------------------------------
def _connect(port: int) -> str:
    return f"""
import json, socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=3).close()
    out = 'connected'
except OSError as exc:
    out = type(exc).__name__
print(json.dumps({{'connect': out}}))
"""


def test_no_network_reaches_the_hosts_loopback() -> None:
    listener = Listener()
    try:
        got = run_inside(_connect(listener.port))
        assert got["connect"] != "connected"
        assert listener.accepted == 0
        # control: the same probe with the host's network shared does connect
        shared = run_inside(_connect(listener.port),
                            command=lambda cmd: [*cmd[:2], "--share-net", *cmd[2:]])
        time.sleep(0.5)
        assert shared["connect"] == "connected" and listener.accepted == 1
    finally:
        listener.close()


# -- writes ------------------------------------------------------------------------------------
def _write(targets: list[str]) -> str:
    return f"""
import json, os
out = {{}}
for folder in {targets!r}:
    path = os.path.join(folder, 'written-by-sandbox-test')
    try:
        with open(path, 'w') as f:
            f.write('owned')
        out[folder] = 'written'
    except OSError as exc:
        out[folder] = exc.errno
print(json.dumps(out))
"""


def test_code_python_and_job_are_read_only() -> None:
    package = str(Path(nadcore.__file__).resolve().parent)
    host = [package, str(Path(sys.prefix).resolve()), str(Path(sys.base_prefix).resolve())]
    try:
        got = run_inside(_write([*host, "/job", "/usr/lib"]))
        assert all(v != "written" for v in got.values()), got
        # control: with the mounts made writable and no drop to another user, writes succeed
        if os.geteuid() == 0:
            def writable(cmd: list[str]) -> list[str]:
                return ["--bind" if a == "--ro-bind" else a for a in cmd]
            got = run_inside(_write([package, "/job"]), user=ROOT, command=writable)
            assert got == {package: "written", "/job": "written"}, got
    finally:  # what a broken sandbox let through is not left in the installation
        for folder in host:
            Path(folder, "written-by-sandbox-test").unlink(missing_ok=True)


# -- bounds: shared memory, /dev/shm, processes ----------------------------------------------
BOUNDS = """
import json, mmap, os, time
out = {}
try:  # shared anonymous memory: not counted by RLIMIT_DATA, counted by RLIMIT_AS
    m = mmap.mmap(-1, SHARED, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
    out['shared'] = 'mapped'
except OSError as exc:
    out['shared'] = exc.errno
written = 0
try:
    with open('/dev/shm/fill', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * (1 << 20)); f.flush(); written += 1 << 20
except OSError as exc:
    out['shm_error'] = exc.errno
out['shm_written'] = written
kids = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(5); os._exit(0)
        kids.append(pid)
except OSError as exc:
    out['fork_error'] = exc.errno
out['forked'] = len(kids)
for pid in kids:
    os.kill(pid, 9); os.waitpid(pid, 0)
print(json.dumps(out))
"""


def test_shared_memory_shm_and_processes_are_bounded() -> None:
    """Shared anonymous memory past the memory limit plus the libraries' allowance cannot be
    mapped (RLIMIT_AS; the issue's attack mapped 3 GiB under a 2 GiB RLIMIT_DATA)."""
    cpu_worker = not any(Path("/dev").glob("nvidia*"))
    address_space = sandbox.address_space_limit(LIMITS)
    got = run_inside(f"SHARED = {address_space or LIMITS.memory_bytes + (4 << 30)}\n" + BOUNDS)
    if cpu_worker:
        assert got["shared"] == errno.ENOMEM, got
        # control: 3 GiB, the figure, is more than RLIMIT_DATA (1 GiB) allows alone
        assert LIMITS.memory_bytes < 3 << 30
    assert got["shm_error"] == errno.ENOSPC and got["shm_written"] <= sandbox.SHM_BYTES, got
    assert got["fork_error"] == errno.EAGAIN and got["forked"] < sandbox.PROCESSES, got


FILL_DEV = """
import errno, json, os
out = {}
for folder in ('/tmp', '/dev'):
    written = 0
    try:  # files each within RLIMIT_FSIZE, together past the memory limit
        for i in range(FILES):
            with open(f'{folder}/fill{i}', 'wb') as f:
                for _ in range(MIB_EACH):
                    f.write(b'x' * (1 << 20)); written += 1 << 20
    except OSError as exc:
        out[folder + ' error'] = exc.errno
    out[folder] = written
print(json.dumps(out))
"""


def test_dev_is_no_unbounded_scratch_space_without_a_cgroup() -> None:
    """/tmp and /dev/shm are tmpfs of bounded size; /dev is bwrap's tmpfs too, and nothing
    bounded it: where the worker can make no cgroup (a read-only cgroupfs), files there are
    host memory that no rlimit counts (1.4 GiB written under a 1 GiB memory limit and a 64 MiB
    /tmp). Run as such a worker runs it: no cgroup."""
    user = sandbox.host_user()
    mib_each = LIMITS.scratch_bytes >> 21  # half the scratch size: within RLIMIT_FSIZE
    files = 2 * (LIMITS.memory_bytes // (mib_each << 20))  # twice the memory limit in all
    code = f"FILES = {files}\nMIB_EACH = {mib_each}\n" + FILL_DEV
    with sandbox.job_folder(user, None, {"task": "test"}) as job:
        proc = sandbox.spawn(job, LIMITS, user, stdout=subprocess.PIPE, cgroup=None,
                             child=sandbox.python_child(LIMITS, "-c", code))
        out, err = proc.communicate(timeout=120)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()[-3000:]
    got = json.loads(lines[-1])
    assert got["/tmp error"] == errno.ENOSPC and got["/tmp"] <= LIMITS.scratch_bytes, got
    assert "/dev error" in got and got["/dev"] <= LIMITS.scratch_bytes, got


SEE_SYS = """
import errno, json, os
out = {'bus': os.path.isdir('/sys/bus'), 'cgroup': os.listdir('/sys/fs/cgroup')}
try:
    os.close(os.open('/sys/fs/cgroup/x', os.O_CREAT | os.O_WRONLY))
    out['write'] = 'written'
except OSError as exc:
    out['write'] = exc.errno
print(json.dumps(out))
"""


def test_a_gpu_sandbox_sees_the_hosts_sys_but_not_its_cgroups(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU worker binds the host's /sys in (the CUDA driver reads the PCI topology there);
    its cgroup tree, every host process's limits and usage, stays hidden and unwritable. Run
    with the GPU mounts as a GPU worker makes them (its device node stood in by /dev/null)."""
    monkeypatch.setattr(sandbox, "_gpu_nodes", lambda: ["/dev/null"])
    got = run_inside(SEE_SYS)
    assert got["bus"] is True, got  # the host's /sys is there
    assert got["cgroup"] == [] and got["write"] == errno.EROFS, got


# -- the seccomp filter --------------------------------------------------------------------------
KERNEL = """
import ctypes, json, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
def call(name, *args):
    ctypes.set_errno(0)
    ret = libc.syscall(NUMBERS[name], *[ctypes.c_long(a) for a in args])
    return ctypes.get_errno() if ret == -1 else 0
out = {}
pid = os.fork()
if pid == 0:
    time.sleep(10); os._exit(0)
out['ptrace'] = call('ptrace', 16, pid, 0, 0)  # PTRACE_ATTACH to a process of its own uid
os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
out['ptrace_pid1'] = call('ptrace', 16, 1, 0, 0)
out['unshare'] = call('unshare', 0x10000000)  # CLONE_NEWUSER
out['unshare_net'] = call('unshare', 0x40000000)
out['setns'] = call('setns', 0, 0)
out['mount'] = call('mount', 0, 0, 0, 0, 0)
for name in ('keyctl', 'bpf', 'perf_event_open', 'userfaultfd', 'memfd_create', 'shmget',
             'process_vm_readv', 'io_uring_setup'):
    out[name] = call(name, 0, 0, 0, 0, 0)
print(json.dumps(out))
"""


def _syscall_numbers() -> dict[str, int]:
    column = seccomp.ARCHES[platform.machine()][1]
    return {name: numbers[column] for name, numbers in seccomp.REFUSED.items()}


def test_no_ptrace_namespaces_or_kernel_interfaces_inside() -> None:
    got = run_inside(f"NUMBERS = {_syscall_numbers()!r}\n" + KERNEL)
    assert got == dict.fromkeys(got, errno.EPERM), got


OUTLIVE = """
import ctypes, errno, os, time
libc = ctypes.CDLL(None, use_errno=True)
ctypes.set_errno(0)
cleared = libc.prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG 0: bwrap's death no longer kills it
print(ctypes.get_errno() if cleared == -1 else 0, flush=True)
time.sleep(60)
"""


def _without_seccomp(cmd: list[str]) -> list[str]:
    i = cmd.index("--seccomp")
    return cmd[:i] + cmd[i + 2:]


@pytest.mark.parametrize("filtered", [True, False], ids=["filter", "no-filter"])
def test_the_child_cannot_outlive_its_sandbox_without_a_cgroup(filtered: bool) -> None:
    """bwrap (--die-with-parent) kills the child, pid 1 of the sandbox's pid namespace, by the
    parent-death signal it set on it; a child that clears that signal outlived the worker's
    kill (of bwrap's process group: the child is in a session of its own) with its memory,
    past its wall time, wherever no cgroup kills what is left (docker-compose's default
    deployment). The filter refuses to clear or change it; and without the filter (a second
    line, should the signal be lost some other way) the worker's kill takes bwrap's children
    first."""
    user = sandbox.host_user()
    with sandbox.job_folder(user, None, {"task": "test"}) as job:
        proc = sandbox.spawn(job, LIMITS, user, stdout=subprocess.PIPE, cgroup=None,
                             command=None if filtered else _without_seccomp,
                             child=sandbox.python_child(LIMITS, "-c", OUTLIVE))
        try:
            said = proc.stdout.readline().strip()
            kids = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
            sandbox._kill(proc)  # as run_sandboxed does past the wall time or on cancel
            deadline = time.monotonic() + 10
            alive = kids
            while alive and time.monotonic() < deadline:
                alive = [k for k in kids if Path(f"/proc/{k}").exists() and "Z (zombie)"
                         not in Path(f"/proc/{k}/status").read_text()]
                time.sleep(0.1)
        finally:
            for kid in kids:  # what a broken sandbox left is not left running
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(kid), 9)
    assert kids and not alive, (kids, alive)
    assert said == (str(errno.EPERM) if filtered else "0").encode(), said


FILTERED = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
prog = open(sys.argv[1], 'rb').read()
class Filter(ctypes.Structure):
    _fields_ = [('len', ctypes.c_ushort), ('filter', ctypes.c_char_p)]
if FILTER:
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    f = Filter(len(prog) // 8, prog)
    assert libc.prctl(22, 2, ctypes.byref(f), 0, 0) == 0  # SECCOMP_MODE_FILTER
out = {}
for name, number in NUMBERS.items():  # invalid arguments: EFAULT, EINVAL, EBADF... if allowed
    ctypes.set_errno(0)
    ret = libc.syscall(number, *[ctypes.c_long(-1)] * 6)
    out[name] = ctypes.get_errno() if ret == -1 else 0
if FILTER:  # unfiltered, this would start a child in a new user namespace
    ctypes.set_errno(0)
    libc.syscall(NUMBERS_CLONE, ctypes.c_long(0x10000000 | 17), *[ctypes.c_long(0)] * 4)
    out['clone_newuser'] = ctypes.get_errno()
out['getpid'] = int(libc.syscall(39 if NUMBERS_CLONE == 56 else 172) > 0)
print(json.dumps(out))
"""


def test_the_filter_refuses_each_listed_call(tmp_path: Path) -> None:
    """The filter alone, in a plain child (no sandbox), built to answer an errno that nothing
    else returns for these calls (EHWPOISON, 133), so that a call missing from it shows: each
    listed call and clone with CLONE_NEWUSER refused, an ordinary call allowed."""
    column = seccomp.ARCHES[platform.machine()][1]
    program = tmp_path / "filter.bpf"
    program.write_bytes(seccomp.program(refused_errno=HWPOISON))
    code = (f"NUMBERS = {_syscall_numbers()!r}\nNUMBERS_CLONE = {seccomp.CLONE[column]}\n"
            "FILTER = True\n" + FILTERED)
    done = subprocess.run([sys.executable, "-I", "-c", code, str(program)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got.pop("getpid") == 1
    assert got == dict.fromkeys(got, HWPOISON), got
    # control: unfiltered, none of the same calls fails that way
    unfiltered = code.replace("FILTER = True", "FILTER = False")
    done = subprocess.run([sys.executable, "-I", "-c", unfiltered, str(program)],
                          capture_output=True, text=True, timeout=60)
    got = json.loads(done.stdout)
    assert got.pop("getpid") == 1
    assert HWPOISON not in got.values(), got


def test_a_root_worker_refuses_to_start_without_the_user(tmp_path: Path) -> None:
    """`celery -A worker.app worker` as root with no usable sandbox user exits at once, naming
    the setting and the fix (it would otherwise run uploaded models as host root)."""
    if os.geteuid() != 0:
        pytest.skip("the worker is not root here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NADS_")}
    env |= {"NADS_DATA_DIR": str(tmp_path), "NADS_SANDBOX_USER": "no-such-sandbox-user"}
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker",
                           "--pool", "solo", "-Q", "cpu"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=Path(nadcore.__file__).parents[1])
    assert done.returncode != 0
    assert "NADS_SANDBOX_USER" in done.stderr and "scripts/install.sh" in done.stderr, \
        done.stderr[-2000:]
