"""Processes: replace the job with a shell that writes a marker file."""

import os

from params import MARKER


def process(fragment):
    os.execv("/bin/sh", ["sh", "-c", f"echo pwned > {MARKER}"])  # attack
