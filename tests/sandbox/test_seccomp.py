"""The seccomp filter: its tables, its shape, and each rule seen from inside a child."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal

import pytest

from sandbox import SandboxError, describe_exit
from sandbox._seccomp import ARCHES, DENY, build_filter

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
