"""describe_exception / describe_exit: the rule and a message a job's author can act on.

The confined tests check these on real refusals; here, the cases a child cannot easily
produce on demand, and the wording when limits are or are not known.
"""

from __future__ import annotations

import errno
import signal

import pytest

from sandbox import describe_exception, describe_exit

LIMITS = {"memory_mb": 512, "cpu_seconds": 60, "wall_seconds": 120, "recursion_depth": 1000,
          "merge_output_mb": 1024, "threads": 1}


def refused(path: str, *_mode: str) -> None:
    """Stands in for a call Landlock refuses."""
    raise PermissionError(errno.EACCES, "Permission denied", path)


def caught(fn) -> BaseException:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("did not raise")


def test_reading_and_writing_outside_are_told_apart() -> None:
    open, write_text = refused, refused  # noqa: A001 - the names are what is read
    assert describe_exception(caught(lambda: open("/etc/passwd"))) == (
        "files", "tried to read /etc/passwd: jobs may read only their own folder")
    assert describe_exception(caught(lambda: open("/etc/passwd", "rb"))) == (
        "files", "tried to read /etc/passwd: jobs may read only their own folder")
    assert describe_exception(caught(lambda: open("/etc/x", "w")))[1].startswith(
        "tried to write /etc/x")
    assert describe_exception(caught(lambda: write_text("/etc/cron.d/x"))) == (
        "files", "tried to write /etc/cron.d/x: jobs may write only in their results folder, "
        "and only while merging")


def test_an_eperm_on_a_path_is_the_jobs_own_error() -> None:
    exc = PermissionError(errno.EPERM, "Operation not permitted", "results/x")
    assert describe_exception(exc) == (
        None, "PermissionError: [Errno 1] Operation not permitted: 'results/x'")


def test_an_unattributed_refusal_still_names_the_sandbox() -> None:
    rule, message = describe_exception(PermissionError(errno.EPERM, "Operation not permitted"))
    assert rule == "sandbox" and "refused" in message


@pytest.mark.parametrize("exc, rule, message", [
    (MemoryError(), "memory",
     "ran out of memory: needed more than this job's limit of 512 MB (limits.memory_mb)"),
    (RecursionError("maximum recursion depth exceeded"), "recursion",
     "recursed deeper than this job's limit of 1000 calls (limits.recursion_depth)"),
    (RuntimeError("can't start new thread"), "threads",
     "tried to start more threads than this job's limit of 1 (limits.threads)"),
    (OSError(errno.EFBIG, "File too large"), "merge output",
     "wrote more output than this job's limit of 1024 MB (limits.merge_output_mb)"),
    (ValueError("bad fragment"), None, "ValueError: bad fragment"),
    (KeyError("k"), None, "KeyError: 'k'"),
    (StopIteration(), None, "StopIteration"),
])
def test_exceptions(exc: BaseException, rule: str | None, message: str) -> None:
    assert describe_exception(exc, limits=LIMITS) == (rule, message)


def test_without_limits_the_message_still_names_the_limit() -> None:
    assert describe_exception(MemoryError()) == (
        "memory", "ran out of memory: needed more than this job's limit (limits.memory_mb)")
    assert describe_exit(-signal.SIGXCPU) == (
        "cpu time", "used more CPU time for one fragment than this job's limit "
        "(limits.cpu_seconds)")


@pytest.mark.parametrize("status, kwargs, rule, words", [
    (-signal.SIGXCPU, {}, "cpu time",
     "used more than 60 s of CPU time for one fragment; this job's limit is 60 s "
     "(limits.cpu_seconds)"),
    (-signal.SIGKILL, {"cpu_seconds_used": 61.0}, "cpu time", "60 s of CPU time"),
    (-signal.SIGKILL, {"cpu_seconds_used": 3.0}, None, "too much memory"),
    (-signal.SIGKILL, {"wall_timeout": True}, "wall time",
     "ran more than 120 s of wall time for one fragment; this job's limit is 120 s "
     "(limits.wall_seconds)"),
    (-signal.SIGSYS, {}, "seccomp", "forbids"),
    (-signal.SIGSEGV, {}, "recursion/stack", "1000 calls"),
    (-signal.SIGXFSZ, {}, "merge output", "1024 MB"),
    (-signal.SIGABRT, {}, None, "SIGABRT"),
    (-signal.SIGTERM, {}, None, "killed by SIGTERM"),
    (3, {}, None, "exited with status 3"),
])
def test_exits(status: int, kwargs: dict[str, object], rule: str | None, words: str) -> None:
    got_rule, message = describe_exit(status, limits=LIMITS, **kwargs)  # type: ignore[arg-type]
    assert got_rule == rule
    assert words in message
