"""Signals: stop a bystander process, then kill the node (the test's own process)."""

import os
import signal

from params import NODE_PID, VICTIM_PID


def process(fragment):
    failures = []
    for pid, sig in (
        (VICTIM_PID, signal.SIGSTOP),
        (VICTIM_PID, signal.SIGKILL),
        (NODE_PID, signal.SIGTERM),
    ):
        try:
            os.kill(pid, sig)  # attack
        except OSError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return fragment
