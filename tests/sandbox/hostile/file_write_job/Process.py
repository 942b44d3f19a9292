"""Files: rewrite the job's own code (the job folder is read-only: a worker caches it)."""

from pathlib import Path


def process(fragment):
    Path(__file__).write_text("def process(fragment):\n    return 'tampered'\n")  # attack
    return fragment
