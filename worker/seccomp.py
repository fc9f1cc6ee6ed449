"""The sandbox's seccomp filter: a classic BPF program, built here, that bubblewrap installs
(`--seccomp FD`) just before it executes the sandboxed child.

It refuses (EPERM) the system calls that an uploaded model never needs and that widen the
kernel's attack surface or escape the sandbox's bounds: tracing and reading other processes
(ptrace, process_vm_*, pidfd_getfd), new namespaces (unshare, setns, clone with a CLONE_NEW*
flag; clone3, whose flags a filter cannot read, answers ENOSYS so that the C library falls back
to clone), mounts, keyrings, bpf, perf_event_open, userfaultfd, io_uring, module and kexec
loading, clearing the parent-death signal that ties the child's life to bwrap's (prctl
PR_SET_PDEATHSIG), and the shared memory that no rlimit counts (memfd_create and System V
segments: pages that live while nothing maps them). A call from another ABI (x32, or 32-bit
code on a 64-bit kernel) kills the process: the numbers below are the native ones only.

The syscall numbers are the kernel's (asm/unistd_64.h for x86-64, asm-generic/unistd.h for
arm64); other architectures have no filter and the worker refuses to run uploaded models there.
No library is needed: the program is some fifty 8-byte instructions.
"""

from __future__ import annotations

import errno
import platform
import struct

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}, native byte order
_INSN = struct.Struct("=HBBI")
_LD_W_ABS, _JEQ, _JSET, _RET = 0x20, 0x15, 0x45, 0x06
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (little-endian arg low half)
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
CLONE_NEW_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET

# name: (x86-64, arm64)
REFUSED = {
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271),
    "pidfd_getfd": (438, 438), "unshare": (272, 97), "setns": (308, 268),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "open_tree": (428, 428), "move_mount": (429, 429), "fsopen": (430, 430),
    "fsconfig": (431, 431), "fsmount": (432, 432), "fspick": (433, 433),
    "mount_setattr": (442, 442), "keyctl": (250, 219), "add_key": (248, 217),
    "request_key": (249, 218), "bpf": (321, 280), "perf_event_open": (298, 241),
    "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427), "kexec_load": (246, 104), "kexec_file_load": (320, 294),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "memfd_create": (319, 279), "shmget": (29, 194), "shmat": (30, 196), "shmctl": (31, 195),
}
CLONE = (56, 220)
CLONE3 = (435, 435)
# prctl: refused for PR_SET_PDEATHSIG (first argument), the signal bwrap (--die-with-parent) set
# on the child, pid 1 of the sandbox's pid namespace: cleared, the child outlives bwrap's kill
PRCTL = (157, 167)
PR_SET_PDEATHSIG = 1
# AUDIT_ARCH_* of the machines filtered, and the column of each in REFUSED
ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1), "arm64": (0xC00000B7, 1)}
_X32_BIT = 0x40000000


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return _INSN.pack(code, jt, jf, k)


def supported() -> bool:
    return platform.machine() in ARCHES


def program(machine: str | None = None, refused_errno: int = errno.EPERM) -> bytes:
    """The filter for `machine` (default: this one) as bwrap reads it from its --seccomp FD;
    refused calls fail with `refused_errno` (tests pick one that nothing else returns)."""
    machine = machine or platform.machine()
    if machine not in ARCHES:
        raise ValueError(f"machine: no seccomp filter for {machine!r} (x86_64 and aarch64 only)")
    audit_arch, column = ARCHES[machine]
    refused = sorted({numbers[column] for numbers in REFUSED.values()})
    deny = _insn(_RET, RET_ERRNO | refused_errno)
    body = [_insn(_LD_W_ABS, _NR)]
    if machine == "x86_64":  # x32 calls carry this bit: another table, killed below
        body.append(_insn(0x35, _X32_BIT, jt=0, jf=1))  # JGE
        body.append(_insn(_RET, RET_KILL_PROCESS))
    for number in refused:
        body += [_insn(_JEQ, number, jt=0, jf=1), deny]
    body += [_insn(_JEQ, CLONE3[column], jt=0, jf=1), _insn(_RET, RET_ERRNO | errno.ENOSYS)]
    # clone: refused when its flags (first argument, low 32 bits) ask for a new namespace
    body += [_insn(_JEQ, CLONE[column], jt=0, jf=3), _insn(_LD_W_ABS, _ARG0_LOW),
             _insn(_JSET, CLONE_NEW_FLAGS, jt=0, jf=1), deny]
    # prctl(PR_SET_PDEATHSIG, ...): refused (the number loaded again: clone's test above may
    # have loaded its argument)
    body += [_insn(_LD_W_ABS, _NR), _insn(_JEQ, PRCTL[column], jt=0, jf=3),
             _insn(_LD_W_ABS, _ARG0_LOW), _insn(_JEQ, PR_SET_PDEATHSIG, jt=0, jf=1), deny]
    body.append(_insn(_RET, RET_ALLOW))
    head = [_insn(_LD_W_ABS, _ARCH), _insn(_JEQ, audit_arch, jt=1, jf=0),
            _insn(_RET, RET_KILL_PROCESS)]
    return b"".join(head + body)
