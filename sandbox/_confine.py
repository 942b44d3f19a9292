"""`confine(policy)`: the layers one sandboxed child applies to itself, and `probe()`.

`confine` runs in a freshly forked, single-threaded child, right before it imports job
code. In order:

1. unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC): the child keeps its uid (it
   must still own results_dir) but holds capabilities only in a namespace of its own,
   sees a network with nothing in it but a downed loopback (every connect fails), and
   an empty set of SysV IPC objects and POSIX message queues (no other process's
   shared memory, which it could otherwise attach by id since it has the same uid).
2. Landlock: read-only access to the job folder and Python's own files, read-write only
   to results_dir (see `landlock_paths`); everything else on disk is refused.
3. rlimits: address space, CPU time, file size, open files, core dumps, stack.
4. no_new_privs, and every capability dropped.
5. seccomp: no sockets, exec, new processes, ptrace, mounts, namespaces, signals or
   limits aimed at other processes (`_seccomp`).

Each step is final: nothing later can undo it. A step that fails raises `SandboxError`,
and the caller must then exit without running job code.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import select
import signal
import socket
import time
from dataclasses import dataclass

from . import _landlock, _paths, _seccomp
from ._paths import landlock_paths, python_read_paths
from ._policy import LAYER_ORDER, Policy, SandboxError

__all__ = [
    "LayerStatus", "clean_environ", "confine", "landlock_paths", "prepare", "probe",
    "python_read_paths",
]

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWIPC = 0x08000000
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_SET_DUMPABLE = 4
_CAP_VERSION_3 = 0x20080522

# Loaded once, when the fork server imports us, so a child pays nothing for it.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.restype = ctypes.c_int
_libc.unshare.restype = ctypes.c_int
_libc.syscall.restype = ctypes.c_long
_MACHINE = os.uname().machine


@dataclass(frozen=True)
class LayerStatus:
    """Whether one layer works on this machine, and why not (or what it does)."""

    available: bool
    detail: str


def prepare() -> None:
    """Do once, in the fork server before it forks, what every child's confine() needs:
    resolve Python's read paths and pack the seccomp filters. A child then only adds
    its own job's paths and writes its pid into a copy of the filter."""
    _paths.remember()
    for threads in (False, True):
        try:
            _seccomp.compiled(_MACHINE, pid=0, threads=threads)
        except SandboxError:
            return  # no table for this architecture: confine() says so, with seccomp


def clean_environ(threads: int) -> dict[str, str]:
    """The whole environment of a job child: nothing of the node's, `threads` per pool.

    The runtime does `os.environ.clear(); os.environ.update(clean_environ(n))` before
    confining, so secrets in the node's environment never reach job code.
    PYTHONHASHSEED only matters to a process Python starts (none can be); the fork
    server must be started with it for str hashes to agree across workers.
    """
    n = str(max(1, int(threads)))
    return {
        "PATH": "/usr/bin:/bin",  # exec is refused anyway; shutil.which still works
        "HOME": "/nonexistent",  # nothing to find in a home folder
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TZ": "UTC",  # the same local time on every worker (and no host detail)
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",  # the job folder is read-only
        "PYTHONIOENCODING": "utf-8",
        # Numeric libraries start a thread per core unless told; the job has `threads`.
        "OMP_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "NUMEXPR_NUM_THREADS": n,
        "VECLIB_MAXIMUM_THREADS": n,
    }


# --- the layers ------------------------------------------------------------------------


def _read_first_int(path: str) -> int | None:
    try:
        with open(path, "rb") as f:  # bytes: no codec to import in the child
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _userns_refused(err: int) -> str:
    """Why the kernel refused a user namespace, in words the machine's owner can act on."""
    if err == errno.EINVAL and not os.path.exists("/proc/self/ns/user"):
        return "user namespaces unavailable: this kernel was built without CONFIG_USER_NS"
    if err == errno.EINVAL:
        return "cannot enter a user namespace from a process with several threads"
    if _read_first_int("/proc/sys/user/max_user_namespaces") == 0:
        return "user namespaces disabled by user.max_user_namespaces = 0"
    if err == errno.ENOSPC:
        return "no user namespace left: the user.max_user_namespaces limit is reached"
    if _read_first_int("/proc/sys/kernel/unprivileged_userns_clone") == 0:
        return ("user namespaces disabled by kernel.unprivileged_userns_clone = 0 "
                "(`sysctl -w kernel.unprivileged_userns_clone=1` as root enables them)")
    if _read_first_int("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == 1:
        return ("user namespaces restricted by AppArmor "
                "(kernel.apparmor_restrict_unprivileged_userns = 1)")
    return (f"user namespaces refused by the kernel ({os.strerror(err)}); a container or a "
            "chroot may forbid them")


def _write_proc(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _unshare(*, userns: bool, netns: bool) -> None:
    """Enter new user and/or network namespaces, keeping the uid and gid we had.

    An IPC namespace comes with either: it needs the same capability as the network
    one, which the user namespace gives (or root has).
    """
    uid, gid = os.getuid(), os.getgid()
    flags = (_CLONE_NEWUSER if userns else 0) | (_CLONE_NEWNET if netns else 0) | _CLONE_NEWIPC
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        if userns:
            raise SandboxError(_userns_refused(err), layer="userns")
        raise SandboxError(
            f"cannot make a network namespace ({os.strerror(err)}): without a user "
            "namespace this needs root",
            layer="netns",
        )
    if not userns:
        return
    # A process that changed uid (a root node dropping to a service user) is not
    # dumpable: its /proc/self files then belong to root and the maps below cannot be
    # written. Dumpable only lets processes of our own uid look in; Landlock still
    # stops the child from looking out.
    zero = ctypes.c_ulong(0)
    _libc.prctl(ctypes.c_int(_PR_SET_DUMPABLE), ctypes.c_ulong(1), zero, zero, zero)
    try:
        # Map our own ids onto themselves, one each: the only map an unprivileged
        # process may write, and it keeps results_dir (owned by uid) writable.
        # setgroups must be denied before an unprivileged gid_map is accepted.
        _write_proc("/proc/self/setgroups", "deny")
        _write_proc("/proc/self/uid_map", f"{uid} {uid} 1")
        _write_proc("/proc/self/gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise SandboxError(
            f"entered a user namespace but could not map uid {uid}: {exc.strerror}",
            layer="userns",
        ) from None


def _stat_fields() -> list[bytes]:
    """/proc/self/stat from field 3 on (index 0 is field 3, as in proc(5) minus 3).

    Read before Landlock hides /proc: num_threads (field 20), vsize (23, the address
    space in bytes, as VmSize), env_start and env_end (50, 51).
    """
    with open("/proc/self/stat", "rb") as f:
        # The command name (field 2) may hold spaces and parentheses: cut after the last.
        return f.read().rpartition(b")")[2].split()


def _wipe_initial_environ(fields: list[bytes]) -> None:
    """Zero the environment block the process was started with.

    os.environ.clear() empties the environment, but the strings the fork server was
    started with stay on its stack, which every child copies and job code can read
    (ctypes). Nothing points into the block once the runtime has replaced the
    environment; if something still did, getenv() would find nothing, not crash.
    """
    if len(fields) < 49:
        return  # kernels before 3.5 do not say where it is
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit we already have (raising needs root)."""
    hard = soft if hard is None else hard
    _old_soft, old_hard = resource.getrlimit(which)
    if old_hard != resource.RLIM_INFINITY:
        hard = min(hard, old_hard)
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _apply_rlimits(policy: Policy, vm_size: int) -> None:
    try:
        _lower(resource.RLIMIT_CORE, 0)  # a core file would be written outside the sandbox
        if policy.memory_bytes is not None:
            # The child starts as a copy of the fork server; the job gets headroom above it.
            _lower(resource.RLIMIT_AS, vm_size + policy.memory_bytes)
        if policy.cpu_seconds is not None:
            # SIGXCPU at the soft limit (Python dies of it); SIGKILL a second later for
            # code that catches SIGXCPU.
            _lower(resource.RLIMIT_CPU, policy.cpu_seconds, policy.cpu_seconds + 1)
        _lower(resource.RLIMIT_FSIZE, policy.fsize_bytes)
        _lower(resource.RLIMIT_NOFILE, policy.nofile)
        if policy.stack_bytes is not None:
            _lower(resource.RLIMIT_STACK, policy.stack_bytes)
    except (OSError, ValueError) as exc:
        raise SandboxError(f"could not set resource limits: {exc}", layer="rlimits") from None


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _no_new_privs() -> None:
    """Set no_new_privs, then drop every capability the process holds.

    In its user namespace the child holds every capability, and with uid 0 mapped onto
    itself CAP_DAC_OVERRIDE would still open root's files; without exec nothing gives
    them back.
    """
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(_PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), zero, zero, zero):
        err = ctypes.get_errno()
        raise SandboxError(f"could not set no_new_privs: {os.strerror(err)}", layer="nnp")
    number = _seccomp.syscall_number(_MACHINE, "capset")
    if number is None:
        return
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.syscall(ctypes.c_long(number), ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"could not drop capabilities: {os.strerror(err)}", layer="nnp")


def confine(policy: Policy) -> None:
    """Apply `policy.layers` to this process, for good; raises `SandboxError`.

    Call it in a freshly forked, single-threaded child, after cleaning the environment
    and opening every fd it needs (pipes, /dev/null), right before importing job code.
    """
    layers = policy.layers
    if not layers:
        return
    pid = os.getpid()
    # Landlock and seccomp bind only the calling thread (and the threads it starts
    # later): any other thread would run on unconfined.
    fields = _stat_fields()
    if int(fields[17]) != 1:  # num_threads, field 20
        raise SandboxError(
            "confine() must run in a single-threaded process (a freshly forked child): "
            "another thread here would stay unconfined"
        )
    _wipe_initial_environ(fields)
    vm_size = int(fields[20])  # vsize, field 23: our address space, in bytes
    if "userns" in layers or "netns" in layers:
        _unshare(userns="userns" in layers, netns="netns" in layers)
    if "landlock" in layers:
        read, write = landlock_paths(policy)
        _landlock.restrict(read, write, max_abi=policy.landlock_abi)
    if "rlimits" in layers:
        _apply_rlimits(policy, vm_size)
    if "nnp" in layers:
        _no_new_privs()
    if "seccomp" in layers:
        _seccomp.install(_seccomp.compiled(_MACHINE, pid=pid, threads=policy.max_threads > 1))


# --- probe -----------------------------------------------------------------------------


def _probe_userns() -> tuple[bool, str]:
    _unshare(userns=True, netns=False)
    return True, f"own user namespace, uid {os.getuid()} kept, no capabilities outside"


def _probe_netns() -> tuple[bool, str]:
    _unshare(userns=False, netns=True)
    with socket.socket() as probe_socket:
        try:
            probe_socket.connect(("127.0.0.1", 9))
        except OSError as exc:
            return True, f"own network namespace: connect fails ({exc.strerror})"
    return False, "a new network namespace still reached 127.0.0.1"


def _probe_landlock() -> tuple[bool, str]:
    abi, why = _landlock.abi_status()
    if abi < 1:
        return False, why
    _landlock.restrict([], [])
    return True, _landlock.describe_abi(abi)


def _probe_nnp() -> tuple[bool, str]:
    _no_new_privs()
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(_PR_GET_NO_NEW_PRIVS), zero, zero, zero, zero) != 1:
        return False, "prctl accepted no_new_privs but does not report it set"
    return True, "no_new_privs set, capabilities dropped"


def _probe_seccomp() -> tuple[bool, str]:
    _seccomp.install(_seccomp.build_filter(_MACHINE, pid=os.getpid(), threads=False))
    try:
        socket.socket().close()
    except PermissionError:
        return True, f"filter loaded ({_MACHINE}): socket() answers EPERM"
    return False, "a filter was loaded but socket() still works"


def _probe_layers() -> dict[str, tuple[bool, str]]:
    """Runs in the throwaway child: apply each layer as confine does and check it holds."""
    vm_size = int(_stat_fields()[20])  # vsize, before Landlock hides /proc

    def rlimits() -> tuple[bool, str]:
        _apply_rlimits(Policy(memory_bytes=1 << 30, cpu_seconds=60), vm_size)
        return True, "AS, CPU, FSIZE, NOFILE, CORE, STACK"

    steps = {"userns": _probe_userns, "netns": _probe_netns, "landlock": _probe_landlock,
             "rlimits": rlimits, "nnp": _probe_nnp, "seccomp": _probe_seccomp}
    found: dict[str, tuple[bool, str]] = {}
    for layer, step in steps.items():
        try:
            found[layer] = step()
        except SandboxError as exc:
            found[layer] = (False, str(exc))
        except Exception as exc:  # noqa: BLE001 - one broken layer must not hide the others
            found[layer] = (False, f"probing it failed: {exc!r}")
    return found


def probe(timeout: float = 2.0) -> dict[str, LayerStatus]:
    """Which layers work on this machine, tried in a throwaway child; the caller stays free.

    Returns one `LayerStatus` per layer name in `ALL_LAYERS`.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported over the pipe
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(_probe_layers()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([read_fd], [], [], left)[0]:
                break
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        try:
            os.kill(pid, signal.SIGKILL)  # harmless if it has exited; it must not linger
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
    try:
        found = json.loads(b"".join(chunks))
    except ValueError:
        why = f"the probe child ended without an answer (exit status {status})"
        return {name: LayerStatus(False, why) for name in LAYER_ORDER}
    return {
        name: LayerStatus(bool(found[name][0]), str(found[name][1]))
        if name in found else LayerStatus(False, "not probed")
        for name in LAYER_ORDER
    }
