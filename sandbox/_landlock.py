"""Landlock through raw syscalls: which files a child may read or write.

Landlock is an unprivileged Linux security module: a process builds a ruleset of
"this right under this folder" and restricts itself to it, for good. Every right the
ruleset *handles* and no rule *grants* is refused with EACCES. Each kernel release may
add rights (the ABI version), so the ruleset handles exactly the rights this kernel
knows, and everything newer simply goes unhandled:

- ABI 1 (5.13): files and folders: read, write, create, remove, execute.
- ABI 2 (5.19): REFER, renaming and linking across folders.
- ABI 3 (6.2): TRUNCATE.
- ABI 4 (6.7): TCP bind and connect. No rule grants them: every TCP bind/connect fails.
- ABI 5 (6.10): IOCTL_DEV, ioctl on devices opened after the restriction.
- ABI 6 (6.12): scopes: no signals to, and no abstract Unix sockets of, processes
  outside the sandbox.
- ABI 7 (6.15): audit logging flags; no new rights, nothing to do here.

Landlock also stops a sandboxed process from ptracing (or reading /proc/PID/mem of)
any process that is not sandboxed at least as tightly, on every ABI.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Sequence

from ._policy import SandboxError

__all__ = ["abi_status", "describe_abi", "gaps", "handled_rights", "kernel_gaps", "restrict"]

# Same numbers on every architecture: Landlock came after the syscall tables were unified.
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1 << 0
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights (linux/landlock.h).
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
# Network rights (ABI 4) and scopes (ABI 6).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

#: Rights that make sense on a file rather than a folder; a rule on a file may hold
#: only these (the kernel answers EINVAL otherwise).
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
#: Read-only: list folders and read files. No EXECUTE: exec is refused anyway, and a
#: second lock on it costs nothing.
READ_RIGHTS = READ_FILE | READ_DIR
#: Read-write for results_dir: create, change, rename and remove plain files and
#: folders. Never symlinks, fifos, sockets or devices: a symlink to /etc/passwd or a
#: fifo in results_dir could trick the node when it packs the folder afterwards.
WRITE_RIGHTS = (
    READ_RIGHTS | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | REFER | TRUNCATE
)


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in linux/landlock.h: 12 bytes
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# Loaded once, when the fork server imports us, so a child pays nothing for it.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


def _syscall(number: int, *args: object) -> int:
    """A raw syscall; returns its result or raises OSError with the errno."""
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def abi_status() -> tuple[int, str]:
    """(ABI version, "") when Landlock works here, else (0, why not)."""
    try:
        abi = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return 0, "no Landlock ABI: this kernel was built without Landlock (5.13 or newer " \
                      "with CONFIG_SECURITY_LANDLOCK is needed)"
        if exc.errno == errno.EOPNOTSUPP:
            return 0, "no Landlock ABI: Landlock is built in but switched off at boot; add " \
                      "'landlock' to the kernel's lsm= parameter"
        return 0, f"no Landlock ABI: the kernel answered {exc.strerror}"
    return abi, ""


def handled_rights(abi: int) -> tuple[int, int, int]:
    """(filesystem, network, scope) rights a ruleset handles on Landlock `abi`."""
    if abi < 1:
        return 0, 0, 0
    fs = (MAKE_SYM << 1) - 1  # ABI 1: EXECUTE .. MAKE_SYM
    if abi >= 2:
        fs |= REFER
    if abi >= 3:
        fs |= TRUNCATE
    if abi >= 5:
        fs |= IOCTL_DEV
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


#: What each ABI added that matters to a job's host, and what stands in for it below.
_ADDED: tuple[tuple[int, str, str], ...] = (
    (2, "5.19", "no renaming or linking across folders of results_dir (a merger must write "
                "each file where it stays)"),
    (3, "6.2", "no TRUNCATE right: seccomp refuses truncate() by path instead"),
    (4, "6.7", "no TCP rules: the network namespace and seccomp's socket ban stand in"),
    (5, "6.10", "no IOCTL_DEV right: ioctl on the two devices a job may open (/dev/null, "
                "/dev/urandom) is not confined"),
    (6, "6.12", "no signal scoping: seccomp refuses kill() of other processes and fcntl "
                "F_SETOWN, F_SETOWN_EX and F_SETSIG (signals sent on I/O) instead"),
)


def gaps(abi: int) -> list[str]:
    """What Landlock `abi` lacks against the newest this code knows, and what stands in."""
    return [f"{what} (Landlock ABI {needed}, Linux {linux})"
            for needed, linux, what in _ADDED if abi < needed]


def kernel_gaps() -> list[str]:
    """`gaps` of this kernel's Landlock; none when it has no Landlock at all (probe()
    reports that layer as missing, which is more than a gap)."""
    abi, _why = abi_status()
    return gaps(abi) if abi >= 1 else []


def describe_abi(abi: int) -> str:
    """What Landlock `abi` confines, and what it lacks, for probe() and `octop2p doctor`."""
    parts = ["files"]
    if abi >= 4:
        parts.append("TCP bind/connect")
    if abi >= 6:
        parts.append("signals and abstract sockets")
    text = f"ABI {abi}: confines " + ", ".join(parts)
    missing = gaps(abi)
    return text + ("; this kernel lacks: " + "; ".join(missing) if missing else "")


def _attr_size(abi: int) -> int:
    # The kernel reads as many bytes as we say: an older kernel refuses fields it does
    # not know unless they are zero, so pass only the fields this ABI has.
    if abi >= 6:
        return 24
    if abi >= 4:
        return 16
    return 8


def _add_path(ruleset_fd: int, path: str, rights: int, handled_fs: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(
            f"cannot give the job access to {path}: {exc.strerror}", layer="landlock"
        ) from None
    try:
        allowed = rights & handled_fs
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            allowed &= FILE_RIGHTS
        attr = _PathBeneathAttr(allowed, fd)
        try:
            _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset_fd),
                     ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(attr), ctypes.c_uint32(0))
        except OSError as exc:
            raise SandboxError(
                f"Landlock refused a rule for {path}: {exc.strerror}", layer="landlock"
            ) from None
    finally:
        os.close(fd)


def restrict(
    read_paths: Sequence[str], write_paths: Sequence[str], *, max_abi: int | None = None
) -> int:
    """Restrict this process for good: read `read_paths`, read-write `write_paths`.

    Every other file and folder, every TCP bind or connect (ABI 4+), every signal and
    abstract Unix socket outside the sandbox (ABI 6+) is refused. `max_abi` uses no
    more than that ABI, as an older kernel would. Returns the ABI used; raises
    `SandboxError` if Landlock is missing or a path cannot be opened.
    """
    abi, why = abi_status()
    if abi < 1:
        raise SandboxError(why, layer="landlock")
    if max_abi is not None:
        abi = min(abi, max_abi)
    fs, net, scoped = handled_rights(abi)
    attr = _RulesetAttr(fs, net, scoped)
    try:
        ruleset = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr),
                           ctypes.c_size_t(_attr_size(abi)), ctypes.c_uint32(0))
    except OSError as exc:
        raise SandboxError(
            f"Landlock refused to make a ruleset: {exc.strerror}", layer="landlock"
        ) from None
    try:
        for path in read_paths:
            _add_path(ruleset, path, READ_RIGHTS, fs)
        for path in write_paths:
            _add_path(ruleset, path, WRITE_RIGHTS, fs)
        try:
            _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
        except OSError as exc:
            if exc.errno != errno.EPERM:
                raise SandboxError(
                    f"Landlock could not restrict the process: {exc.strerror}", layer="landlock"
                ) from None
            # Without CAP_SYS_ADMIN (no user namespace) the kernel wants no_new_privs
            # first, so that exec cannot lift the restriction. It only takes away.
            if _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), ctypes.c_ulong(0),
                           ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
                raise SandboxError(
                    "Landlock needs no_new_privs, and setting it failed", layer="landlock"
                ) from None
            try:
                _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
            except OSError as again:
                raise SandboxError(
                    f"Landlock could not restrict the process: {again.strerror}",
                    layer="landlock",
                ) from None
    finally:
        os.close(ruleset)
    return abi
