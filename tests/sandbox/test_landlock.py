"""Landlock on its own: which paths it allows, older ABIs, and what it stops by itself."""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

import pytest

from sandbox import _confine, _paths
from sandbox._confine import landlock_paths, python_read_paths
from sandbox._landlock import (
    IOCTL_DEV,
    NET_CONNECT_TCP,
    REFER,
    SCOPE_SIGNAL,
    TRUNCATE,
    abi_status,
    handled_rights,
    restrict,
)

from .confined import alive, require, run_confined, victim
from .conftest import Box
from .test_confine import outcome

LANDLOCK_ONLY = frozenset({"landlock"})


def _abi() -> int:
    require("landlock")
    return abi_status()[0]


def test_handled_rights_grow_with_the_abi() -> None:
    assert handled_rights(0) == (0, 0, 0)
    fs1, net1, scope1 = handled_rights(1)
    assert fs1 == (1 << 13) - 1 and net1 == scope1 == 0
    assert handled_rights(2)[0] == fs1 | REFER
    assert handled_rights(3)[0] == fs1 | REFER | TRUNCATE
    assert handled_rights(4)[1] & NET_CONNECT_TCP and not handled_rights(4)[0] & IOCTL_DEV
    assert handled_rights(5)[0] & IOCTL_DEV and handled_rights(5)[2] == 0
    assert handled_rights(6)[2] & SCOPE_SIGNAL
    assert handled_rights(7) == handled_rights(6)


def test_python_read_paths_cover_python_and_nothing_sensitive(box: Box) -> None:
    paths = python_read_paths()
    home = os.path.realpath(os.path.expanduser("~"))
    for path in paths:
        assert path != "/" and not home.startswith(path.rstrip("/") + "/") and path != home
        assert not any(path == p or p.startswith(path + "/") for p in ("/etc", "/tmp", "/proc"))
    covered = lambda p: any(p == k or p.startswith(k + "/") for k in paths)  # noqa: E731
    assert covered(os.path.realpath(os.__file__))  # the standard library
    assert covered(os.path.realpath(pytest.__file__))  # site-packages
    assert covered("/etc/ld.so.cache") or not os.path.exists("/etc/ld.so.cache")
    read, write = landlock_paths(box.policy())
    assert read[0] == str(box.job) and write == [str(box.results), "/dev/null"]


@pytest.mark.parametrize("abi", range(1, 8))
def test_every_older_abi_still_confines_files(box: Box, abi: int) -> None:
    if abi > _abi():
        pytest.skip(f"this kernel has Landlock ABI {_abi()}")
    from sandbox import _landlock

    def work() -> dict[str, object]:
        # As on an older kernel: the ruleset handles only what ABI `abi` knows.
        _landlock.abi_status = lambda: (abi, "")  # type: ignore[assignment]
        read, write = landlock_paths(box.policy())
        restrict(read, write)
        (box.results / "out.txt").write_text("ok")
        return {
            "secret": outcome(lambda: open(box.secret).read()),
            "outside write": outcome(lambda: (box.secret.parent / "x").write_text("x")),
            "job data": (box.job / "data.txt").read_text(),
            "import": outcome(lambda: __import__("sqlite3").sqlite_version_info[0]),
        }

    report = run_confined(work, box.policy(layers=frozenset()))
    assert box.token not in report.text
    assert report.value["secret"][:2] == ("PermissionError", errno.EACCES)
    assert report.value["outside write"][:2] == ("PermissionError", errno.EACCES)
    assert report.value["job data"] == "job data\n" and report.value["import"] == 3
    assert (box.results / "out.txt").read_text() == "ok"
    assert not (box.secret.parent / "x").exists()


def test_landlock_alone_stops_ptrace_and_proc_of_other_processes(box: Box) -> None:
    with victim(env={"CANARY": box.token}) as proc:
        target = proc.pid
        import ctypes

        def attack() -> dict[str, object]:
            libc = ctypes.CDLL(None, use_errno=True)
            attached = libc.ptrace(ctypes.c_long(16), ctypes.c_long(target), None, None)
            return {
                "attach": -ctypes.get_errno() if attached == -1 else attached,
                "environ": outcome(lambda: open(f"/proc/{target}/environ", "rb").read()),
            }

        report = run_confined(attack, box.policy(layers=LANDLOCK_ONLY))
        assert alive(proc)
    assert box.token not in report.text
    assert report.value["attach"] == -errno.EPERM
    assert report.value["environ"][:2] == ("PermissionError", errno.EACCES)


def test_landlock_alone_refuses_tcp_connect(box: Box) -> None:
    if _abi() < 4:
        pytest.skip("TCP rules need Landlock ABI 4")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        report = run_confined(
            lambda: outcome(lambda: socket.create_connection(("127.0.0.1", port), timeout=1)),
            box.policy(layers=LANDLOCK_ONLY),
        )
        listener.settimeout(0.3)
        with pytest.raises(TimeoutError):
            listener.accept()
    assert report.value[:3] == ("PermissionError", errno.EACCES, "network")


def test_landlock_alone_refuses_signals_and_abstract_sockets_outside(box: Box) -> None:
    if _abi() < 6:
        pytest.skip("scopes need Landlock ABI 6")
    name = f"\0octop2p-test-{box.token}"
    with victim() as proc, socket.socket(socket.AF_UNIX) as listener:
        listener.bind(name)
        listener.listen()

        def attack() -> dict[str, object]:
            return {
                "kill": outcome(lambda: os.kill(proc.pid, signal.SIGKILL)),
                "abstract": outcome(lambda: socket.socket(socket.AF_UNIX).connect(name)),
            }

        report = run_confined(attack, box.policy(layers=LANDLOCK_ONLY))
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
        assert alive(proc)
    assert report.value["kill"][:2] == ("PermissionError", errno.EPERM)
    assert report.value["abstract"][:2] == ("PermissionError", errno.EPERM)


def test_paths_prepared_in_the_server_are_the_same_paths(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prepare() resolves Python's paths once, before the fork server forks; a child then
    # resolves only its own additions (the job folder the runtime puts in sys.path).
    monkeypatch.setattr(_paths, "_RESOLVED", {})
    monkeypatch.setattr(sys, "path", [*sys.path, "/", os.path.expanduser("~")])
    fresh = python_read_paths()
    _confine.prepare()
    assert python_read_paths() == fresh
    monkeypatch.setattr(sys, "path", [str(box.job), *sys.path])
    child = python_read_paths()
    assert sorted(child) == sorted([*fresh, str(box.job.resolve())])


def test_sys_path_entries_that_cover_home_are_left_out(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "path", ["/", os.path.expanduser("~"), "", "relative", *sys.path])
    paths = python_read_paths()
    assert "/" not in paths and os.path.realpath(os.path.expanduser("~")) not in paths
