"""Processes: os.system a command that writes a marker file, ignoring its status
(as most callers of os.system do)."""

import os

from params import MARKER


def process(fragment):
    os.system(f"echo pwned > {MARKER}")  # attack
    return fragment
