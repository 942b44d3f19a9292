"""Run a function in a forked child after `confine()`, and hear back what happened.

Every hostile test goes through `run_confined`: the child confines itself, runs the
attack, and reports over a pipe; the parent enforces a timeout (SIGKILL), reaps the
child, and then checks the world for the attack's effects. A layer this kernel lacks
skips the test with the reason `probe()` gives.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import pickle
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from sandbox import ALL_LAYERS, LayerStatus, Policy, confine, describe_exception, probe

LIMITS = {"memory_mb": 256, "cpu_seconds": 1, "wall_seconds": 5, "recursion_depth": 1000,
          "merge_output_mb": 1, "threads": 1}


@functools.cache
def probed() -> dict[str, LayerStatus]:
    """probe(), once per test session."""
    return probe()


def require(*layers: str) -> None:
    """Skip the calling test unless every layer works here."""
    status = probed()
    for layer in layers:
        if not status[layer].available:
            pytest.skip(f"{layer}: {status[layer].detail}")


@dataclass
class Caught:
    """An exception job code raised, as the child saw it."""

    type: str
    errno: int | None
    text: str
    rule: str | None
    message: str


@dataclass
class Report:
    """What one confined child did: its value or exception, and how it ended."""

    value: Any = None
    caught: Caught | None = None
    confine_error: str | None = None
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def text(self) -> str:
        """Everything the child reported, as one string (to search for leaked secrets)."""
        return repr((self.value, self.caught, self.confine_error))


def _child(fn: Callable[[], Any], policy: Policy, environ: dict[str, str] | None,
           before: Callable[[], None] | None, write_fd: int) -> None:
    # fds 0-2 go to /dev/null as in the real runtime: pytest's capture files are
    # regular files, which RLIMIT_FSIZE=0 would make unwritable anyway.
    faulthandler.disable()  # pytest's holds its own copy of the terminal's fd
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if environ is not None:
        os.environ.clear()
        os.environ.update(environ)
    try:
        if before is not None:
            before()
        confine(policy)
    except BaseException as exc:  # noqa: BLE001 - reported, then the child exits
        report: tuple[str, Any] = ("confine", repr(exc))
    else:
        try:
            report = ("value", fn())
        except BaseException as exc:  # noqa: BLE001
            rule, message = describe_exception(exc, limits=LIMITS)
            report = ("caught", Caught(type(exc).__name__, getattr(exc, "errno", None),
                                       str(exc), rule, message))
    data = pickle.dumps(report)
    while data:
        data = data[os.write(write_fd, data):]


def run_confined(fn: Callable[[], Any], policy: Policy | None = None, *,
                 timeout: float = 10.0, environ: dict[str, str] | None = None,
                 before: Callable[[], None] | None = None) -> Report:
    """Fork, confine with `policy`, run `fn`, report; SIGKILL the child after `timeout`.

    `environ` replaces the child's environment and `before` runs just before confine().
    """
    policy = policy or Policy()
    require(*sorted(policy.layers))
    read_fd, write_fd = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            _child(fn, policy, environ, before, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks: list[bytes] = []
    timed_out = False
    try:
        while True:
            left = started + timeout - time.monotonic()
            if left <= 0 or not select.select([read_fd], [], [], left)[0]:
                timed_out = True
                break
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    report = Report(returncode=os.waitstatus_to_exitcode(status), timed_out=timed_out,
                    seconds=time.monotonic() - started)
    if chunks:
        kind, payload = pickle.loads(b"".join(chunks))
        setattr(report, {"value": "value", "caught": "caught", "confine": "confine_error"}[kind],
                payload)
    return report


def all_but(*layers: str) -> frozenset[str]:
    """ALL_LAYERS without `layers`."""
    return ALL_LAYERS - set(layers)


@contextmanager
def victim(env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A bystander process of our uid (in its own session) for the child to attack."""
    proc = subprocess.Popen(["sleep", "60"], env=env or {}, start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until it runs `sleep`, not a fork of us
            with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                if f.read().startswith(b"sleep"):
                    break
            time.sleep(0.002)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def alive(proc: subprocess.Popen[bytes]) -> bool:
    """True while `proc` runs and has not been stopped or traced."""
    if proc.poll() is not None:
        return False
    with open(f"/proc/{proc.pid}/status", encoding="ascii") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return fields["State"].split()[0] in ("S", "R") and fields["TracerPid"].strip() == "0"
