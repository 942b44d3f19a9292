"""Attacks from inside a confined child, each proved to fail by its effect on the world.

A listener that hears nothing, a secret that appears nowhere in what the child says,
a file that does not exist afterwards, a bystander process still alive and untraced,
a marker file no process wrote. Positive tests show that what jobs need still works.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import signal
import socket
import time

import pytest

from sandbox import SandboxError, describe_exception
from sandbox._seccomp import syscall_number

from .confined import alive, run_confined, victim
from .conftest import Box

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_MACHINE = os.uname().machine


def raw(name: str, *args: int) -> int:
    """A raw syscall by name: its result, or minus its errno."""
    number = syscall_number(_MACHINE, name)
    assert number is not None, name
    result = _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    return -ctypes.get_errno() if result == -1 else int(result)


def outcome(fn) -> object:  # type: ignore[no-untyped-def]
    """fn()'s value, or (exception type, errno, rule) if it raised."""
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001
        return (type(exc).__name__, getattr(exc, "errno", None), describe_exception(exc)[0])


EPERM = ("PermissionError", errno.EPERM)
EACCES = ("PermissionError", errno.EACCES)


# --- network -------------------------------------------------------------------------


def test_no_socket_of_any_family_and_the_listener_hears_nothing(box: Box) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port, udp_port = listener.getsockname()[1], udp.getsockname()[1]

        def attack() -> dict[str, object]:
            tries = {
                "tcp": lambda: socket.create_connection(("127.0.0.1", port), timeout=1),
                "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
                    b"hello", ("127.0.0.1", udp_port)),
                "inet6": lambda: socket.socket(socket.AF_INET6),
                "unix": lambda: socket.socket(socket.AF_UNIX),
                "netlink": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
                "packet": lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW),
                "socketpair": socket.socketpair,
            }
            return {name: outcome(fn) for name, fn in tries.items()}

        report = run_confined(attack, box.policy())
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()
        udp.settimeout(0.1)
        with pytest.raises(TimeoutError):
            udp.recv(100)
    assert report.value == {name: (*EPERM, "network") for name in report.value}
    assert len(report.value) == 7


def test_the_network_namespace_alone_reaches_nothing(box: Box) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        report = run_confined(
            lambda: outcome(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
            box.policy(layers=frozenset({"userns", "netns"})),
        )
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert report.value[:2] == ("OSError", errno.ENETUNREACH)


# --- files ---------------------------------------------------------------------------


def test_the_secret_is_unreadable_by_every_path(box: Box) -> None:
    (box.job / "link").symlink_to(box.secret)
    secret = str(box.secret)

    def attack() -> dict[str, object]:
        tries = {
            "open": lambda: open(secret).read(),
            "os.open": lambda: os.read(os.open(secret, os.O_RDONLY), 100),
            "pathlib": lambda: pathlib.Path(secret).read_bytes(),
            "symlink in job folder": lambda: (box.job / "link").read_text(),
            "/proc/self/root": lambda: open("/proc/self/root" + secret).read(),
            "listdir": lambda: os.listdir(box.secret.parent),
            "/etc/passwd": lambda: open("/etc/passwd").read(),
            "/etc/shadow": lambda: open("/etc/shadow").read(),
            "/root": lambda: os.listdir("/root"),
            "/tmp": lambda: os.listdir("/tmp"),
            "/": lambda: os.listdir("/"),
            "/proc/self/environ": lambda: open("/proc/self/environ", "rb").read(),
        }
        return {name: outcome(fn) for name, fn in tries.items()}

    report = run_confined(attack, box.policy())
    assert box.token not in report.text
    assert report.value["open"] == (*EACCES, "files")
    denied = {name: v for name, v in report.value.items() if v[:2] in (EACCES, EPERM)}
    assert denied == report.value


def test_reading_a_secret_names_the_file_and_the_rule(box: Box) -> None:
    report = run_confined(lambda: open(box.secret).read(), box.policy())
    assert report.caught is not None
    assert report.caught.rule == "files"
    assert report.caught.message == (
        f"tried to read {box.secret}: jobs may read only their own folder")


def test_writes_outside_results_leave_nothing_behind(box: Box) -> None:
    outside = box.secret.parent / "planted.txt"
    in_tmp = pathlib.Path("/tmp") / f"octop2p-escape-{box.token}"
    in_job = box.job / "planted.txt"

    def attack() -> dict[str, object]:
        tries = {
            "outside": lambda: outside.write_text("x"),
            "/tmp": lambda: in_tmp.write_text("x"),
            "job folder": lambda: in_job.write_text("x"),
            "overwrite job data": lambda: open(box.job / "data.txt", "w").write("gone"),
            "append job data": lambda: open(box.job / "data.txt", "a").write("more"),
            "remove job data": lambda: os.unlink(box.job / "data.txt"),
            "mkdir outside": lambda: os.mkdir(box.secret.parent / "d"),
            "move job data to results": lambda: os.rename(box.job / "data.txt",
                                                          box.results / "data.txt"),
            "symlink in results": lambda: os.symlink(box.secret, box.results / "key"),
            "fifo in results": lambda: os.mkfifo(box.results / "fifo"),
        }
        return {name: outcome(fn) for name, fn in tries.items()}

    report = run_confined(attack, box.policy())
    assert all(v[:2] in (EACCES, EPERM) for v in report.value.values()), report.value
    assert report.value["outside"][2] == "files"
    assert not outside.exists() and not in_tmp.exists() and not in_job.exists()
    assert (box.job / "data.txt").read_text() == "job data\n"
    assert sorted(os.listdir(box.results)) == []
    assert sorted(os.listdir(box.secret.parent)) == ["node_key"]


def test_writing_outside_names_the_rule(box: Box) -> None:
    target = box.secret.parent / "x.txt"
    report = run_confined(lambda: target.write_text("x"), box.policy())
    assert report.caught is not None
    assert (report.caught.rule, report.caught.message) == (
        "files",
        f"tried to write {target}: jobs may write only in their results folder, "
        "and only while merging",
    )


def test_read_paths_read_and_write_paths_write(box: Box) -> None:
    def work() -> dict[str, object]:
        (box.results / "sub").mkdir()
        (box.results / "sub" / "a.txt").write_text("merged")
        os.rename(box.results / "sub" / "a.txt", box.results / "out.txt")
        with open(os.devnull, "w") as null:
            null.write("silenced")
        return {"data": (box.job / "data.txt").read_text(), "listing": os.listdir(box.job)}

    report = run_confined(work, box.policy())
    assert report.value == {"data": "job data\n", "listing": ["data.txt"]}
    assert (box.results / "out.txt").read_text() == "merged"


def test_a_missing_read_path_is_a_sandbox_error(box: Box) -> None:
    report = run_confined(lambda: None, box.policy(read_paths=(str(box.job / "nope"),)))
    assert report.confine_error is not None
    assert SandboxError.__name__ in report.confine_error
    assert "nope" in report.confine_error


def test_permissions_owners_and_acls_cannot_change(box: Box) -> None:
    # Landlock does not guard metadata, and the child owns every file of its uid.
    before = {p: os.stat(p) for p in (box.secret, box.job / "data.txt", box.job)}
    acl = b"\x02\x00\x00\x00" + b"".join(  # system.posix_acl_access: everyone may read
        tag.to_bytes(2, "little") + perm.to_bytes(2, "little") + (0xFFFFFFFF).to_bytes(4, "little")
        for tag, perm in ((0x01, 6), (0x04, 4), (0x20, 4)))

    def attack() -> dict[str, object]:
        fd = os.open(box.job / "data.txt", os.O_RDONLY)  # a path the job may read
        return {
            "chmod secret": outcome(lambda: os.chmod(box.secret, 0o644)),
            "chmod job": outcome(lambda: os.chmod(box.job, 0o777)),
            "fchmod": outcome(lambda: os.fchmod(fd, 0o666)),
            "chown": outcome(lambda: os.chown(box.job / "data.txt", 0, 0)),
            "acl": outcome(lambda: os.setxattr(box.secret, "system.posix_acl_access", acl)),
            "xattr": outcome(lambda: os.setxattr(fd, "user.note", b"x")),
            "shutil.copy": outcome(lambda: __import__("shutil").copy(
                box.job / "data.txt", box.results / "copy.txt")),
            "shutil.copyfile": outcome(lambda: __import__("shutil").copyfile(
                box.job / "data.txt", box.results / "copyfile.txt")),
        }

    report = run_confined(attack, box.policy())
    after = {p: os.stat(p) for p in before}
    assert [(a.st_mode, a.st_uid) for a in after.values()] == [
        (b.st_mode, b.st_uid) for b in before.values()]
    assert os.listxattr(box.secret) == []
    got = report.value
    assert str(got.pop("shutil.copyfile")).endswith("copyfile.txt")
    assert got == {name: (*EPERM, "files") for name in got}, got


# --- processes -------------------------------------------------------------------------


def test_no_new_process_of_any_kind_runs(box: Box) -> None:
    marks = box.results

    def attack() -> dict[str, object]:
        import multiprocessing
        import pty
        import subprocess

        def fork() -> None:
            if os.fork() == 0:
                (marks / "fork").touch()
                os._exit(0)

        def raw_clone() -> int:
            got = raw("clone", signal.SIGCHLD, 0, 0, 0, 0)
            if got == 0:
                (marks / "clone").touch()
                os._exit(0)
            return got

        def shell(mark: str) -> list[str]:
            return ["/bin/sh", "-c", f"echo x > {marks / mark}"]

        tries = {
            "os.fork": fork,
            "subprocess": lambda: subprocess.run(shell("subprocess"), check=False),
            "posix_spawn": lambda: os.posix_spawn("/bin/sh", shell("spawn"), {}),
            "multiprocessing": lambda: multiprocessing.get_context("fork").Process(
                target=(marks / "mp").touch).start(),
            "pty.fork": pty.fork,
            "os.execv": lambda: os.execv("/bin/sh", shell("exec")),
            "os.system": lambda: os.system(f"echo x > {marks / 'system'}"),
            "raw clone": raw_clone,
        }
        if _MACHINE == "x86_64":
            tries["raw fork"] = lambda: raw("fork")
            tries["raw vfork"] = lambda: raw("vfork")
        return {name: outcome(fn) for name, fn in tries.items()}

    report = run_confined(attack, box.policy())
    time.sleep(0.2)  # a process that did start would have written its mark by now
    assert os.listdir(marks) == []
    got = report.value
    for name in ("os.fork", "subprocess", "posix_spawn", "multiprocessing", "os.execv"):
        assert got[name] == (*EPERM, "processes"), (name, got[name])
    assert got["pty.fork"][0] in ("OSError", "PermissionError"), got["pty.fork"]
    assert got["os.system"] != 0
    assert got["raw clone"] == -errno.EPERM
    if _MACHINE == "x86_64":
        assert got["raw fork"] == got["raw vfork"] == -errno.EPERM


def test_clone3_answers_enosys_so_libc_falls_back(box: Box) -> None:
    # With a NULL argument a real clone3 answers EFAULT or EINVAL; ENOSYS is the filter.
    assert run_confined(lambda: raw("clone3", 0, 0), box.policy()).value == -errno.ENOSYS


# --- other processes ---------------------------------------------------------------------


def test_other_processes_cannot_be_signalled(box: Box) -> None:
    with victim() as proc:
        target = proc.pid

        def attack() -> dict[str, object]:
            info = ctypes.create_string_buffer(128)
            ctypes.memmove(info, (ctypes.c_int * 3)(signal.SIGKILL, 0, -1), 12)  # SI_QUEUE
            return {
                "kill": outcome(lambda: os.kill(target, signal.SIGKILL)),
                "killpg": outcome(lambda: os.killpg(target, signal.SIGKILL)),
                "tgkill": raw("tgkill", target, target, signal.SIGKILL),
                "tkill": raw("tkill", target, signal.SIGKILL),
                "sigqueue": raw("rt_sigqueueinfo", target, signal.SIGKILL,
                                ctypes.addressof(info)),
                "pidfd_open": outcome(lambda: os.pidfd_open(target)),
                "parent": outcome(lambda: os.kill(os.getppid(), 0)),
                "everyone": outcome(lambda: os.kill(-1, 0)),
                "own group": outcome(lambda: os.kill(0, 0)),
                "self": outcome(lambda: os.kill(os.getpid(), 0)),
            }

        report = run_confined(attack, box.policy())
        time.sleep(0.05)
        assert alive(proc)
    got = report.value
    assert got.pop("self") is None
    for name in ("tgkill", "tkill", "sigqueue"):
        assert got.pop(name) == -errno.EPERM, name
    assert got == {name: (*EPERM, "processes") for name in got}


def test_a_job_signals_itself(box: Box) -> None:
    def work() -> list[int]:
        seen: list[int] = []
        signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
        os.kill(os.getpid(), signal.SIGUSR1)
        signal.raise_signal(signal.SIGUSR1)
        return seen

    assert run_confined(work, box.policy()).value == [signal.SIGUSR1] * 2


def test_other_processes_cannot_be_traced_or_read(box: Box) -> None:
    with victim(env={"CANARY": box.token}) as proc:
        target = proc.pid
        # The control: unconfined, this is exactly how the secret would leak.
        with open(f"/proc/{target}/environ", "rb") as f:
            assert box.token.encode() in f.read()
        _libc.ptrace.restype = ctypes.c_long

        def ptrace(request: int, pid: int) -> int:
            result = _libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None)
            return -ctypes.get_errno() if result == -1 else int(result)

        def attack() -> dict[str, object]:
            buf = ctypes.create_string_buffer(64)
            iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 64)
            return {
                "attach": ptrace(16, target),  # PTRACE_ATTACH
                "seize": ptrace(0x4206, target),  # PTRACE_SEIZE
                "traceme": ptrace(0, 0),
                "vm_readv": raw("process_vm_readv", target, ctypes.addressof(iov), 1,
                                ctypes.addressof(iov), 1, 0),
                "environ": outcome(lambda: open(f"/proc/{target}/environ", "rb").read()),
                "cmdline": outcome(lambda: open(f"/proc/{target}/cmdline", "rb").read()),
                "mem": outcome(lambda: open(f"/proc/{target}/mem", "rb").read(8)),
                "parent environ": outcome(
                    lambda: open(f"/proc/{os.getppid()}/environ", "rb").read()),
            }

        report = run_confined(attack, box.policy())
        assert alive(proc)
    assert box.token not in report.text
    got = report.value
    for name in ("attach", "seize", "traceme", "vm_readv"):
        assert got.pop(name) == -errno.EPERM, name
    assert all(v[:2] == EACCES for v in got.values()), got


def test_proc_self_mem_cannot_be_opened(box: Box) -> None:
    # Landlock grants nothing under /proc: /proc/self/mem, maps and fd/ stay shut. (A
    # process may change its own memory through ctypes anyway; the filters live in
    # the kernel, out of its reach.)
    report = run_confined(lambda: {
        "mem rw": outcome(lambda: open("/proc/self/mem", "r+b")),
        "maps": outcome(lambda: open("/proc/self/maps").read()),
        "fd": outcome(lambda: os.listdir("/proc/self/fd")),
    }, box.policy())
    assert all(v[:2] == EACCES for v in report.value.values()), report.value


# --- what jobs need ----------------------------------------------------------------------


def test_pipes_imports_and_everyday_python_work(box: Box) -> None:
    def work() -> dict[str, object]:
        import decimal
        import hashlib
        import json
        import lzma
        import math
        import pickle
        import random
        import sqlite3
        import traceback
        import zlib

        r, w = os.pipe()
        os.write(w, b"through a pipe")
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            tb = traceback.format_exc()
        db = sqlite3.connect(":memory:")
        return {
            "pipe": os.read(r, 100),
            "json": json.loads(json.dumps({"a": [1, 2]})),
            "pickle": pickle.loads(pickle.dumps({1, 2, 3})),
            "sha256": hashlib.sha256(b"abc").hexdigest()[:8],
            "zlib": zlib.decompress(zlib.compress(b"x" * 100)) == b"x" * 100,
            "lzma": lzma.decompress(lzma.compress(b"y")) == b"y",
            "math": math.isqrt(10**12),
            "decimal": str(decimal.Decimal(1) / 8),
            "random": 0 <= random.random() < 1 and len(os.urandom(8)) == 8,
            "sqlite": db.execute("select 6 * 7").fetchone()[0],
            "traceback": "1 / 0" in tb,
            "cpu_count": os.cpu_count() is not None,
        }

    assert run_confined(work, box.policy()).value == {
        "pipe": b"through a pipe", "json": {"a": [1, 2]}, "pickle": {1, 2, 3},
        "sha256": "ba7816bf", "zlib": True, "lzma": True, "math": 10**6,
        "decimal": "0.125", "random": True, "sqlite": 42, "traceback": True,
        "cpu_count": True,
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="run as an ordinary user, the whole file is this")
def test_an_ordinary_user_is_confined_the_same(tmp_path_factory: pytest.TempPathFactory) -> None:
    import shutil
    import tempfile

    nobody = 65534
    # Outside pytest's 0700 temp root, so that the ordinary user can reach its folders.
    base = pathlib.Path(tempfile.mkdtemp(prefix="octop2p-user-"))
    try:
        base.chmod(0o755)
        (base / "job").mkdir()
        (base / "job" / "data.txt").write_text("job data\n")
        (base / "results").mkdir()
        os.chown(base / "results", nobody, nobody)

        def become_nobody() -> None:
            os.setgroups([])
            os.setgid(nobody)
            os.setuid(nobody)

        def work() -> dict[str, object]:
            (base / "results" / "out.txt").write_text("merged")
            return {
                "uid": os.getuid(),
                "data": (base / "job" / "data.txt").read_text(),
                "socket": outcome(socket.socket),
                "fork": outcome(lambda: os.fork()),
                "outside": outcome(lambda: (base / "planted").write_text("x")),
            }

        from sandbox import Policy

        policy = Policy(read_paths=(str(base / "job"),), write_paths=(str(base / "results"),),
                        memory_bytes=256 << 20, fsize_bytes=1 << 20)
        report = run_confined(work, policy, before=become_nobody)
        assert report.confine_error is None, report.confine_error
        assert report.value["uid"] == nobody and report.value["data"] == "job data\n"
        assert report.value["socket"] == (*EPERM, "network")
        assert report.value["fork"] == (*EPERM, "processes")
        assert report.value["outside"][:2] in (EACCES, EPERM)
        assert (base / "results" / "out.txt").read_text() == "merged"
        assert not (base / "planted").exists()
    finally:
        shutil.rmtree(base)


def test_confine_refuses_a_process_with_other_threads(box: Box) -> None:
    def start_thread_then_confine() -> None:
        import threading

        from sandbox import confine

        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        try:
            confine(box.policy())
        finally:
            stop.set()

    from sandbox import Policy

    report = run_confined(start_thread_then_confine, Policy(layers=frozenset()))
    assert report.caught is not None and report.caught.type == "SandboxError"
    assert "single-threaded" in report.caught.text
