"""The seccomp filter: its tables, its shape, and each rule seen from inside a child."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import socket
import struct

import pytest

from sandbox import SandboxError, _confine, _paths, _seccomp, describe_exit
from sandbox._seccomp import ARCHES, DENY, build_filter, compiled, pack

from .confined import LIMITS, alive, run_confined, victim
from .conftest import Box
from .test_confine import outcome, raw

_MACHINE = os.uname().machine


@pytest.mark.parametrize("machine", sorted(ARCHES))
def test_syscall_tables_match_libseccomp(machine: str) -> None:
    pyseccomp = pytest.importorskip("pyseccomp")
    arch_id = {"x86_64": pyseccomp.Arch.X86_64, "aarch64": pyseccomp.Arch.AARCH64}[machine]
    for name, number in ARCHES[machine].numbers.items():
        known = pyseccomp.resolve_syscall(arch_id, name)
        if known < 0 and number >= 403:
            continue  # newer than this libseccomp; checked below
        assert known == number, (machine, name)


def test_new_syscalls_share_one_number_everywhere() -> None:
    # From 403 on the kernel gives a syscall the same number on every architecture.
    x86, arm = ARCHES["x86_64"].numbers, ARCHES["aarch64"].numbers
    for name, number in x86.items():
        if number >= 403:
            assert arm[name] == number, name


@pytest.mark.parametrize("machine", sorted(ARCHES))
@pytest.mark.parametrize("threads", [False, True])
def test_filter_assembles_with_every_jump_in_range(machine: str, threads: bool) -> None:
    program = build_filter(machine, pid=4_000_000, threads=threads)
    assert 50 < len(program) < 255
    assert all(0 <= jt <= 255 and 0 <= jf <= 255 for _code, jt, jf, _k in program)
    assert program[-1] == (0x06, 0, 0, 0x80000000)  # the last word: kill on wrong arch


ALLOW, KILL = 0x7FFF0000, 0x80000000
EPERM_RET, ENOSYS_RET = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS
PID, OTHER = 4_000_000, 4_000_001


def _run_bpf(program: list[tuple[int, int, int, int]], arch: int, nr: int,
             args: tuple[int, ...]) -> int:
    """What the kernel's classic BPF does with one struct seccomp_data: the verdict."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args, *[0] * (6 - len(args)))
    acc = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:  # ld [k]
            acc = int.from_bytes(data[k : k + 4], "little")
        elif code == 0x54:  # and #k
            acc &= k
        elif code == 0x05:  # ja
            pc += k
        elif code in (0x15, 0x35):  # jeq, jge
            pc += jt if (acc == k if code == 0x15 else acc >= k) else jf
        else:
            assert code == 0x06, code
            return k
        pc += 1


def _expected(machine: str, nr: int, args: tuple[int, ...], threads: bool) -> int:
    """The verdict the rules in sandbox/_seccomp.py promise, written out plainly."""
    names = {number: name for name, number in ARCHES[machine].numbers.items()}
    name, a = names.get(nr), (*args, *[0] * (6 - len(args)))
    if machine == "x86_64" and nr >= 0x40000000:
        return KILL
    if name in DENY:
        return EPERM_RET
    if name == "clone3":
        return ENOSYS_RET
    ok = {
        "clone": threads and a[0] & 0x7E030000 == 0x10000,
        "fcntl": a[1] & 0xFFFFFFFF not in _seccomp.FCNTL_DENIED,
        **{n: a[0] == PID for n in _seccomp.SELF_ONLY},
        **{n: a[0] in (0, PID) for n in _seccomp.SELF_OR_ZERO},
        **{n: a[0] == which and a[1] in (0, PID) for n, which in _seccomp.WHICH_PROCESS},
    }.get(name or "", True)
    return ALLOW if ok else EPERM_RET


@pytest.mark.parametrize("machine", sorted(ARCHES))
@pytest.mark.parametrize("threads", [False, True])
def test_filter_decides_every_syscall_as_the_rules_say(machine: str, threads: bool) -> None:
    # Every number of the table and beyond, with arguments that each rule tells apart:
    # our pid, another, 0, our pid with a high bit set, the denied fcntl commands.
    program = build_filter(machine, pid=PID, threads=threads)
    arch = ARCHES[machine].audit
    argsets = [(), (PID, PID), (OTHER, OTHER), (PID | 1 << 32, 0), (0, PID | 1 << 32),
               (1, PID), (1, OTHER), (0x10000, 8), (0x10000 | 0x20000000, 10),
               (0, 15), (0, 8 | 1 << 32), (0, 1), (0, 4)]
    for nr in [*range(0, 600), 0x40000000 | 39, 0xFFFFFFFF]:
        for args in argsets:
            got = _run_bpf(program, arch, nr if nr < 1 << 31 else nr - (1 << 32), args)
            assert got == _expected(machine, nr, args, threads), (nr, args)
    assert _run_bpf(program, arch ^ 1, 39, ()) == KILL  # another architecture


def test_a_packed_filter_is_the_built_one_for_each_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    # compiled() packs one template and writes each child's pid in: never a pid left
    # from the process that packed it, or from the previous child.
    monkeypatch.setattr(_paths, "_RESOLVED", {})
    _confine.prepare()
    for pid in (os.getpid(), 1, PID, 2**31 - 1, PID):
        for threads in (False, True):
            built = pack(build_filter(_MACHINE, pid=pid, threads=threads))
            assert compiled(_MACHINE, pid=pid, threads=threads) == built


def test_a_child_of_a_prepared_server_gets_the_whole_filter(
    box: Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As in the fork server: filters and paths prepared once, then every child forked
    # from there. The child's own pid is the one in its filter, and every rule holds.
    monkeypatch.setattr(_paths, "_RESOLVED", {})
    _confine.prepare()
    assert _seccomp._packed.cache_info().currsize >= 2
    with victim() as proc:
        target = proc.pid

        def attack() -> dict[str, object]:
            return {
                "kill other": outcome(lambda: os.kill(target, signal.SIGKILL)),
                "kill self": outcome(lambda: os.kill(os.getpid(), 0)),
                "socket": outcome(lambda: socket.socket().close()),
                "shmget": raw("shmget", 0, 4096, 0o1600),
                "F_SETOWN": raw("fcntl", 0, 8, target),
                "unshare": raw("unshare", 0x10000000),
                "job data": (box.job / "data.txt").read_text(),
                "secret": outcome(lambda: box.secret.read_text()),
            }

        report = run_confined(attack, box.policy())
        assert alive(proc)
    eperm = ("PermissionError", errno.EPERM)
    assert {k: v[:2] if isinstance(v, tuple) else v for k, v in report.value.items()} == {
        "kill other": eperm, "kill self": None, "socket": eperm, "shmget": -errno.EPERM,
        "F_SETOWN": -errno.EPERM, "unshare": -errno.EPERM, "job data": "job data\n",
        "secret": ("PermissionError", errno.EACCES),
    }


def test_other_architectures_are_refused() -> None:
    with pytest.raises(SandboxError, match="no syscall table for the armv7l"):
        build_filter("armv7l", pid=1, threads=False)


def test_every_denied_syscall_answers_eperm(box: Box) -> None:
    # Called with zero arguments: unfiltered, most would answer EINVAL or EFAULT.
    names = [n for n in DENY if n in ARCHES[_MACHINE].numbers and n not in ("fork", "vfork")]
    report = run_confined(lambda: {n: raw(n, 0, 0, 0, 0, 0, 0) for n in names},
                          box.policy(layers=frozenset({"seccomp"})))
    assert report.value == {n: -errno.EPERM for n in names}


def test_no_way_into_another_namespace_or_root(box: Box) -> None:
    clone_newuser = 0x10000000

    def attack() -> dict[str, object]:
        libc = ctypes.CDLL(None, use_errno=True)

        def unshare() -> int:
            return -ctypes.get_errno() if libc.unshare(clone_newuser) else 0

        return {
            "unshare": unshare(),
            "chroot": outcome(lambda: os.chroot(str(box.results))),
            "mount": raw("mount", 0, 0, 0, 0, 0),
            "setns": raw("setns", 0, 0),
        }

    report = run_confined(attack, box.policy())
    assert report.value == {"unshare": -errno.EPERM, "chroot": ("PermissionError", 1, "sandbox"),
                            "mount": -errno.EPERM, "setns": -errno.EPERM}


def test_capabilities_are_all_dropped(box: Box) -> None:
    def capabilities() -> list[int]:
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        assert raw("capget", ctypes.addressof(header), ctypes.addressof(data)) == 0
        return list(data)

    assert run_confined(capabilities, box.policy()).value == [0] * 6


def test_other_processes_limits_and_scheduling_are_untouched(box: Box) -> None:
    with victim() as proc:
        target = proc.pid
        before = (resource.prlimit(target, resource.RLIMIT_NOFILE),
                  os.getpriority(os.PRIO_PROCESS, target), os.sched_getaffinity(target))

        def attack() -> dict[str, object]:
            return {
                "prlimit": outcome(lambda: resource.prlimit(
                    target, resource.RLIMIT_NOFILE, (1, 1))),
                "setpriority": outcome(lambda: os.setpriority(os.PRIO_PROCESS, target, 19)),
                "setpriority group": outcome(lambda: os.setpriority(os.PRIO_PGRP, target, 19)),
                "affinity": outcome(lambda: os.sched_setaffinity(target, {0})),
                "scheduler": outcome(lambda: os.sched_setscheduler(
                    target, os.SCHED_IDLE, os.sched_param(0))),
                # The same calls on ourselves are fine.
                "own prlimit": outcome(lambda: resource.prlimit(
                    0, resource.RLIMIT_NOFILE, (32, 32))),
                "own priority": outcome(lambda: os.setpriority(os.PRIO_PROCESS, 0, 5)),
                "own affinity": outcome(lambda: os.sched_setaffinity(
                    0, os.sched_getaffinity(0))),
            }

        report = run_confined(attack, box.policy())
        after = (resource.prlimit(target, resource.RLIMIT_NOFILE),
                 os.getpriority(os.PRIO_PROCESS, target), os.sched_getaffinity(target))
        assert alive(proc)
    assert after == before
    got = report.value
    assert [got.pop(k) for k in ("own priority", "own affinity")] == [None, None]
    assert got.pop("own prlimit") == (64, 64)  # the old limit, from Policy.nofile
    assert all(v[:2] == ("PermissionError", errno.EPERM) for v in got.values()), got


@pytest.mark.skipif(_MACHINE != "x86_64", reason="x32 exists only on x86_64")
def test_an_x32_syscall_kills_the_process(box: Box) -> None:
    report = run_confined(_x32_getpid, box.policy())
    assert report.returncode == -signal.SIGSYS and report.value is None
    assert describe_exit(report.returncode, limits=LIMITS)[0] == "seccomp"


def _x32_getpid() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.syscall(ctypes.c_long(0x40000000 | 39)))  # x32 getpid


def test_the_filter_alone_names_signal_and_process_rules(box: Box) -> None:
    # Only seccomp: every refusal comes from the filter, not from Landlock.
    report = run_confined(lambda: os.fork(), box.policy(layers=frozenset({"seccomp"})))
    assert report.caught is not None
    assert (report.caught.rule, report.caught.errno) == ("processes", errno.EPERM)


def test_the_filter_alone_stops_signals_and_ptrace(box: Box) -> None:
    with victim() as proc:
        target = proc.pid

        def attack() -> dict[str, object]:
            libc = ctypes.CDLL(None, use_errno=True)
            attached = libc.ptrace(ctypes.c_long(16), ctypes.c_long(target), None, None)
            return {
                "kill": outcome(lambda: os.kill(target, signal.SIGKILL)),
                "tgkill": raw("tgkill", target, target, signal.SIGKILL),
                "attach": -ctypes.get_errno() if attached == -1 else attached,
            }

        report = run_confined(attack, box.policy(layers=frozenset({"seccomp"})))
        assert alive(proc)
    assert report.value == {"kill": ("PermissionError", errno.EPERM, "processes"),
                            "tgkill": -errno.EPERM, "attach": -errno.EPERM}


def test_pid_with_high_bits_set_is_not_taken_for_our_own(box: Box) -> None:
    # The kernel reads a pid as 32 bits; the filter must not compare only those.
    def attack() -> int:
        return raw("kill", os.getpid() | (1 << 32), 0)

    assert run_confined(attack, box.policy(layers=frozenset({"seccomp"}))).value == -errno.EPERM
