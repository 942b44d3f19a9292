"""Signals: kill the parent, the fork server every job of the node is forked from."""

import os
import signal


def process(fragment):
    print(f"parent {os.getppid()}")
    os.kill(os.getppid(), signal.SIGKILL)  # attack
    return fragment
