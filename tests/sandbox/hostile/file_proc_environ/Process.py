"""Files: read the environment of the node (the test's own process) and of the parent."""

import os

from params import NODE_PID


def process(fragment):
    failures = []
    for pid in (NODE_PID, os.getppid()):
        try:
            print(open(f"/proc/{pid}/environ", "rb").read())  # attack
        except OSError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return fragment
