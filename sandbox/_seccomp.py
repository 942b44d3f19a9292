"""The seccomp filter: a hand-assembled classic BPF program, installed with prctl.

Default allow; EPERM (an errno, never a kill) for what job code must not do, so Python
raises PermissionError at the user's own line and `_rules` can name the rule. A wrong
architecture (32-bit int 0x80, x32, arm32 compat) kills the process outright: those
tables have other numbers and would walk round every rule.

Why not pyseccomp/libseccomp: it works, but compiling the filter costs about 1.6 ms in
every child, and libseccomp cannot put two comparisons on one argument in a rule
("who is 0 or my own pid"), which the cross-process rules below need. This program is
about 150 instructions: a binary search on the syscall number (about ten steps for any
syscall), then the rules that look at arguments. The fork server packs it once
(`compiled`); a child writes its own pid into a copy and loads it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ._policy import SandboxError

__all__ = ["ARCHES", "build_filter", "compiled", "install", "pack", "syscall_number"]

# --- syscall tables ------------------------------------------------------------------


@dataclass(frozen=True)
class Arch:
    """One architecture the filter knows: its audit id and its syscall numbers."""

    name: str
    audit: int  # AUDIT_ARCH_* as seccomp_data.arch reports it
    x32_bit: bool  # x86_64: numbers with bit 30 set are the x32 ABI, another table
    numbers: dict[str, int]


# Checked against libseccomp's own tables by tests/sandbox/test_seccomp.py; numbers from
# 403 on are the same on every architecture (asm-generic), newer than some libseccomps.
_X86_64 = {
    "socket": 41, "socketpair": 53, "execve": 59, "execveat": 322, "clone": 56,
    "clone3": 435, "fork": 57, "vfork": 58, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155,
    "chroot": 161, "unshare": 272, "setns": 308, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
    "rt_tgsigqueueinfo": 297, "pidfd_open": 434, "pidfd_send_signal": 424,
    "pidfd_getfd": 438, "process_madvise": 440, "prlimit64": 302, "setpriority": 141,
    "ioprio_set": 251, "sched_setaffinity": 203, "sched_setscheduler": 144,
    "sched_setparam": 142, "sched_setattr": 314, "keyctl": 250, "add_key": 248,
    "request_key": 249, "bpf": 321, "perf_event_open": 298, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "userfaultfd": 323,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163,
    "syslog": 103, "settimeofday": 164, "clock_settime": 227, "clock_adjtime": 305,
    "sethostname": 170, "setdomainname": 171, "open_by_handle_at": 304, "quotactl": 179,
    "quotactl_fd": 443, "iopl": 172, "ioperm": 173, "capset": 126, "capget": 125,
    "chmod": 90, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "chown": 92, "fchown": 93,
    "lchown": 94, "fchownat": 260, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
    "removexattr": 197, "lremovexattr": 198, "fremovexattr": 199, "setxattrat": 463,
    "removexattrat": 466, "shmget": 29, "shmat": 30, "shmctl": 31, "shmdt": 67, "msgget": 68,
    "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semget": 64, "semop": 65, "semctl": 66,
    "semtimedop": 220, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
    "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "fcntl": 72,
    "utime": 132, "utimes": 235, "utimensat": 280, "futimesat": 261, "truncate": 76,
}
_AARCH64 = {
    "socket": 198, "socketpair": 199, "execve": 221, "execveat": 281, "clone": 220,
    "clone3": 435, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
    "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97,
    "setns": 268, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "kill": 129, "tkill": 130,
    "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_open": 434,
    "pidfd_send_signal": 424, "pidfd_getfd": 438, "process_madvise": 440,
    "prlimit64": 261, "setpriority": 140, "ioprio_set": 30, "sched_setaffinity": 122,
    "sched_setscheduler": 119, "sched_setparam": 118, "sched_setattr": 274,
    "keyctl": 219, "add_key": 217, "request_key": 218, "bpf": 280,
    "perf_event_open": 241, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "userfaultfd": 282, "init_module": 105,
    "finit_module": 273, "delete_module": 106, "kexec_load": 104, "kexec_file_load": 294,
    "reboot": 142, "swapon": 224, "swapoff": 225, "acct": 89, "syslog": 116,
    "settimeofday": 170, "clock_settime": 112, "clock_adjtime": 266, "sethostname": 161,
    "setdomainname": 162, "open_by_handle_at": 265, "quotactl": 60, "quotactl_fd": 443,
    "capset": 91, "capget": 90, "fchmod": 52, "fchmodat": 53, "fchmodat2": 452,
    "fchown": 55, "fchownat": 54, "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7,
    "removexattr": 14, "lremovexattr": 15, "fremovexattr": 16, "setxattrat": 463,
    "removexattrat": 466, "shmget": 194, "shmat": 196, "shmctl": 195, "shmdt": 197,
    "msgget": 186, "msgsnd": 189, "msgrcv": 188, "msgctl": 187, "semget": 190, "semop": 193,
    "semctl": 191, "semtimedop": 192, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182,
    "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185, "fcntl": 25,
    "utimensat": 88, "truncate": 45,
}
ARCHES: dict[str, Arch] = {
    "x86_64": Arch("x86_64", 0xC000003E, True, _X86_64),
    "aarch64": Arch("aarch64", 0xC00000B7, False, _AARCH64),
}

#: Refused with EPERM whatever their arguments. A name missing from an architecture's
#: table (fork, vfork, chmod, chown, iopl, ioperm, utime, utimes, futimesat on aarch64;
#: ipc and fcntl64, which only 32-bit tables have) does not exist there.
DENY: tuple[str, ...] = (
    # network: every socket, of every family. The child's two pipes are pipes.
    "socket", "socketpair",
    # new programs and processes (clone is checked below, clone3 answers ENOSYS).
    "execve", "execveat", "fork", "vfork",
    # reading or steering other processes; Landlock stops these too on its kernels.
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_open", "pidfd_getfd",
    "pidfd_send_signal", "process_madvise",
    # mounts and namespaces: no way out of, or into, another view of the system.
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    # permissions, owners, ACLs. Landlock does not guard file metadata, and the child
    # owns every file of its uid (for a root node, the whole system): without this a
    # job could chmod 777 /etc, or put an ACL on the node's key, from a read-only path.
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
    "setxattrat", "removexattrat",
    # file times: Landlock does not guard them either, and a job could backdate (or
    # date ahead) any file of its uid. truncate by path: Landlock ABI 2 and older let
    # it through on read-only files. ftruncate, on a file the job could open for
    # writing, stays allowed: a merger may shorten its own output.
    "utime", "utimes", "utimensat", "futimesat", "truncate",
    # SysV IPC and POSIX message queues. The child has an IPC namespace of its own;
    # this is the second lock, for when that layer is off: without either, a job could
    # attach another process's 0600 shared-memory segment of the same uid and read it.
    "shmget", "shmat", "shmctl", "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "ipc", "mq_open", "mq_unlink",
    "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
    # large kernel attack surface that job code has no use for.
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "userfaultfd",
    # host administration. These need capabilities the child lacks once in its user
    # namespace; refused here too for a node run as root with that layer switched off.
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "syslog", "settimeofday", "clock_settime",
    "clock_adjtime", "sethostname", "setdomainname", "open_by_handle_at", "quotactl",
    "quotactl_fd", "iopl", "ioperm",
)
#: Signals: allowed only when the first argument (pid or thread group) is our own pid.
#: A child keeps its uid, and the kernel lets a process signal any process of the same
#: uid, the node included, across user namespaces.
SELF_ONLY: tuple[str, ...] = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
#: Limits and scheduling: allowed for pid 0 (the caller) or our own pid only. Same uid
#: again: without this a job could lower the node's RLIMIT_NOFILE or pin it to a CPU.
SELF_OR_ZERO: tuple[str, ...] = (
    "prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
)
#: (syscall, the `which` value meaning "one process"): setpriority(PRIO_PROCESS, who)
#: and ioprio_set(IOPRIO_WHO_PROCESS, who) with who 0 or us; PRIO_USER would renice
#: every process of the uid.
WHICH_PROCESS: tuple[tuple[str, int], ...] = (("setpriority", 0), ("ioprio_set", 1))
#: fcntl commands refused: F_SETOWN, F_SETSIG, F_SETOWN_EX. With O_ASYNC the kernel
#: then sends SIGIO (or any signal F_SETSIG names, SIGKILL included) to the owner, and
#: checks only that the uids match: kill()'s pid rule above would not see it, and
#: Landlock scopes such signals only from ABI 6 (Linux 6.12).
FCNTL_DENIED: tuple[int, ...] = (8, 10, 15)

_CLONE_THREAD = 0x00010000
# A thread may not ask for new namespaces either (the kernel refuses most of these
# with CLONE_THREAD already; one mask keeps the rule obvious).
_CLONE_NS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
    | 0x40000000

# --- classic BPF -----------------------------------------------------------------------

_LD_W_ABS = 0x20
_ALU_AND_K = 0x54
_JMP_JA = 0x05
_JMP_JEQ_K = 0x15
_JMP_JGE_K = 0x35
_RET_K = 0x06
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_X32_SYSCALL_BIT = 0x40000000
# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6].
_NR = 0
_ARCH = 4


def _arg_lo(i: int) -> int:
    return 16 + 8 * i  # both architectures are little-endian


def _arg_hi(i: int) -> int:
    return 16 + 8 * i + 4


Insn = tuple[int, int, int, int]  # (code, jt, jf, k) as in struct sock_filter
_INSN = struct.Struct("=HBBI")  # struct sock_filter, in the machine's byte order
_PID = struct.Struct("=I")


class _Assembler:
    """Classic BPF with named labels; jumps go forward only, as BPF requires."""

    def __init__(self) -> None:
        self._code: list[tuple[int, str | None, str | None, int | str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, None, None, offset))

    def and_(self, mask: int) -> None:
        self._code.append((_ALU_AND_K, None, None, mask))

    def jeq(self, k: int, yes: str | None, no: str | None = None) -> None:
        self._code.append((_JMP_JEQ_K, yes, no, k))

    def jge(self, k: int, yes: str | None, no: str | None = None) -> None:
        self._code.append((_JMP_JGE_K, yes, no, k))

    def goto(self, target: str) -> None:
        self._code.append((_JMP_JA, None, None, target))

    def ret(self, value: int) -> None:
        self._code.append((_RET_K, None, None, value))

    def assemble(self) -> list[Insn]:
        def offset(at: int, target: str | None, limit: int) -> int:
            if target is None:
                return 0  # fall through to the next instruction
            distance = self._labels[target] - at - 1
            if not 0 <= distance <= limit:
                raise AssertionError(f"BPF jump to {target} out of range: {distance}")
            return distance

        program: list[Insn] = []
        for at, (code, yes, no, k) in enumerate(self._code):
            if code == _JMP_JA:
                assert isinstance(k, str)
                program.append((code, 0, 0, offset(at, k, 0xFFFFFFFF)))
            else:
                assert isinstance(k, int)
                program.append((code, offset(at, yes, 255), offset(at, no, 255), k))
        return program


def _numbers(arch: Arch, names: Iterable[str]) -> list[int]:
    return [arch.numbers[name] for name in names if name in arch.numbers]


#: Stands for our own pid in a program template: every real constant is 0 or more.
_OWN_PID = -1
#: A branch of the number search with this many runs or fewer tests them one by one.
_LEAF_RUNS = 3


def _labels(arch: Arch) -> dict[int, str]:
    """Syscall number -> the label of the rule that decides it; the rest are allowed."""
    labels = dict.fromkeys(_numbers(arch, DENY), "eperm")
    labels[arch.numbers["clone3"]] = "enosys"  # libc then falls back to clone, checked here
    labels[arch.numbers["clone"]] = "clone"
    labels.update(dict.fromkeys(_numbers(arch, SELF_ONLY), "arg0_self"))
    labels.update(dict.fromkeys(_numbers(arch, SELF_OR_ZERO), "arg0_self_or_zero"))
    for name, which in WHICH_PROCESS:
        labels[arch.numbers[name]] = f"which_{which}"
    labels[arch.numbers["fcntl"]] = "fcntl"
    return labels


def _runs(labels: dict[int, str]) -> list[tuple[int, int, str]]:
    """(first, last, label) for each run of consecutive numbers with one label, in order."""
    runs: list[tuple[int, int, str]] = []
    for nr in sorted(labels):
        if runs and runs[-1][1] == nr - 1 and runs[-1][2] == labels[nr]:
            runs[-1] = (runs[-1][0], nr, labels[nr])
        else:
            runs.append((nr, nr, labels[nr]))
    return runs


def _search(a: _Assembler, runs: list[tuple[int, int, str]]) -> None:
    """A binary search for the syscall number (loaded) among `runs`; allow if not there.

    A linear list of about 130 tests would cost every syscall (and the kernel, which
    tries each number on the filter once when it loads it) up to 130 steps; this costs
    about ten.
    """
    if len(runs) > _LEAF_RUNS:
        middle = runs[len(runs) // 2][0]
        a.jge(middle, f"from_{middle}")
        _search(a, runs[: len(runs) // 2])
        a.label(f"from_{middle}")
        _search(a, runs[len(runs) // 2 :])
        return
    for first, last, label in runs:  # earlier runs are below, so a number below is allowed
        if first == last:
            a.jeq(first, label)
        else:
            a.jge(first, None, "allow")
            a.jge(last + 1, None, label)
    a.ret(_RET_ALLOW)


def _argument_rules(a: _Assembler, *, threads: bool) -> None:
    """The rules that look at arguments, then the verdicts; `_OWN_PID` stands for ours."""
    # fcntl's command is an unsigned int: the kernel ignores the high word, so do we.
    a.label("fcntl")
    a.load(_arg_lo(1))
    for command in FCNTL_DENIED:
        a.jeq(command, "eperm")
    a.ret(_RET_ALLOW)

    a.label("clone")
    if threads:
        a.load(_arg_lo(0))  # clone takes its flags as 32 bits: the high word is ignored
        a.and_(_CLONE_THREAD | _CLONE_NS)
        a.jeq(_CLONE_THREAD, "allow", "eperm")
    else:
        a.goto("eperm")

    # Pids are 32-bit ints to the kernel, but a 64-bit register reaches the filter:
    # demand the exact value, high word zero, so nothing else compares equal.
    a.label("arg0_self_or_zero")
    a.load(_arg_lo(0))
    a.jeq(0, "arg0_high_zero")
    a.goto("arg0_self_low")
    a.label("arg0_self")
    a.load(_arg_lo(0))
    a.label("arg0_self_low")
    a.jeq(_OWN_PID, "arg0_high_zero", "eperm")
    a.label("arg0_high_zero")
    a.load(_arg_hi(0))
    a.jeq(0, "allow", "eperm")

    for _name, which in WHICH_PROCESS:
        a.label(f"which_{which}")
        a.load(_arg_lo(0))
        a.jeq(which, None, "eperm")
        a.load(_arg_hi(0))
        a.jeq(0, "arg1_self_or_zero", "eperm")
    a.label("arg1_self_or_zero")
    a.load(_arg_lo(1))
    a.jeq(0, "arg1_high_zero")
    a.jeq(_OWN_PID, "arg1_high_zero", "eperm")
    a.label("arg1_high_zero")
    a.load(_arg_hi(1))
    a.jeq(0, "allow", "eperm")

    a.label("allow")
    a.ret(_RET_ALLOW)
    a.label("eperm")
    a.ret(_RET_ERRNO | errno.EPERM)
    a.label("enosys")
    a.ret(_RET_ERRNO | errno.ENOSYS)
    a.label("kill")
    a.ret(_RET_KILL_PROCESS)


@functools.cache
def _template(machine: str, threads: bool) -> tuple[Insn, ...]:
    """The filter with `_OWN_PID` where our pid goes; built once per process and kind."""
    arch = ARCHES.get(machine)
    if arch is None:
        raise SandboxError(
            f"seccomp unavailable: no syscall table for the {machine} architecture "
            f"(supported: {', '.join(ARCHES)})",
            layer="seccomp",
        )
    a = _Assembler()
    a.load(_ARCH)
    a.jeq(arch.audit, None, "kill")
    a.load(_NR)
    if arch.x32_bit:
        a.jge(_X32_SYSCALL_BIT, "kill")
    _search(a, _runs(_labels(arch)))
    _argument_rules(a, threads=threads)
    return tuple(a.assemble())


def build_filter(machine: str, *, pid: int, threads: bool) -> list[Insn]:
    """The filter for this process: `pid` is our own, `threads` allows CLONE_THREAD.

    Raises `SandboxError` for an architecture whose syscall table we do not carry.
    """
    return [(code, jt, jf, pid if k == _OWN_PID else k)
            for code, jt, jf, k in _template(machine, threads)]


@functools.cache
def _packed(machine: str, threads: bool) -> tuple[bytes, tuple[int, ...]]:
    """`_template` as struct sock_filter bytes (pid 0), and where each pid goes."""
    program = _template(machine, threads)
    data = b"".join(_INSN.pack(c, jt, jf, 0 if k == _OWN_PID else k) for c, jt, jf, k in program)
    slots = tuple(i * _INSN.size + 4 for i, insn in enumerate(program) if insn[3] == _OWN_PID)
    return data, slots


def compiled(machine: str, *, pid: int, threads: bool) -> bytes:
    """`build_filter(...)` as the bytes `install` loads, from a template packed once.

    The fork server packs both templates before it forks (`_confine.prepare`), so a
    child only writes its pid in; the result is the same program, byte for byte.
    """
    data, slots = _packed(machine, threads)
    program = bytearray(data)
    for offset in slots:
        _PID.pack_into(program, offset, pid)
    return bytes(program)


def pack(program: list[Insn]) -> bytes:
    """`program` as the kernel reads it: one struct sock_filter per instruction."""
    return b"".join(_INSN.pack(*insn) for insn in program)


def syscall_number(machine: str, name: str) -> int | None:
    """The number of syscall `name` on `machine`, if our tables have it."""
    arch = ARCHES.get(machine)
    return None if arch is None else arch.numbers.get(name)


# --- installing it ---------------------------------------------------------------------


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
# Loaded once, when the fork server imports us, so a child pays nothing for it.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.restype = ctypes.c_int


def _prctl(option: int, arg2: int, arg3: object = None) -> int:
    zero = ctypes.c_ulong(0)
    third = zero if arg3 is None else arg3
    return int(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), third, zero, zero))


def install(program: list[Insn] | bytes) -> None:
    """Load `program` (instructions, or `compiled` bytes) as our seccomp filter, for good.

    Raises `SandboxError` if the kernel refuses it (no seccomp filter support).
    """
    data = pack(program) if isinstance(program, list) else program
    insns = ctypes.create_string_buffer(data, len(data))
    prog = _SockFprog(len(data) // _INSN.size, ctypes.addressof(insns))
    if _prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog)) == 0:
        return
    err = ctypes.get_errno()
    if err == errno.EACCES:
        # Without CAP_SYS_ADMIN the kernel wants no_new_privs first, so that a setuid
        # program cannot be run under a filter that confuses it. It only takes away.
        if _prctl(_PR_SET_NO_NEW_PRIVS, 1) == 0 and _prctl(
            _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog)
        ) == 0:
            return
        err = ctypes.get_errno()
    if err == errno.EINVAL:
        why = "this kernel was built without seccomp filters (CONFIG_SECCOMP_FILTER)"
    else:
        why = f"the kernel refused the filter: {os.strerror(err)}"
    raise SandboxError(f"seccomp unavailable: {why}", layer="seccomp")
