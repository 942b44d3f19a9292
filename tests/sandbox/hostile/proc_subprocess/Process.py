"""Processes: subprocess.run a command that writes a marker file."""

import subprocess

from params import MARKER


def process(fragment):
    subprocess.run(["sh", "-c", f"echo pwned > {MARKER}"], check=True)  # attack
    return fragment
