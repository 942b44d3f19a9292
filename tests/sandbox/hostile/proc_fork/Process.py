"""Processes: a (small, bounded) fork bomb whose children write a marker file."""

import os

from params import MARKER


def process(fragment):
    for _ in range(4):
        if os.fork() == 0:  # attack
            with open(MARKER, "a") as f:
                f.write(f"child {os.getpid()}\n")
            os._exit(0)
    return fragment
