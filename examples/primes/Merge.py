"""Add each fragment's prime count into results_dir/count.txt.

The merge process may be restarted between two calls, so the running state
lives in a file in results_dir, never in a global. While the job runs,
count.txt holds "<primes so far> <fragments merged>"; finalize() rewrites it
as just the final count and adds summary.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from Split import LIMIT


def _write_atomically(path: Path, text: str) -> None:
    """Replace path's content; a crash mid-write leaves the old file intact."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_state(results_dir: Path) -> tuple[int, int]:
    """(primes so far, fragments merged), or (0, 0) before the first merge."""
    path = results_dir / "count.txt"
    if not path.exists():
        return 0, 0
    count, fragments = path.read_text().split()
    return int(count), int(fragments)


def merger(result: int, results_dir: Path) -> None:
    """Add one fragment's count to the running total."""
    count, fragments = _read_state(results_dir)
    _write_atomically(results_dir / "count.txt", f"{count + result} {fragments + 1}\n")


def finalize(results_dir: Path) -> None:
    """Leave count.txt holding only the answer, and write summary.json."""
    count, fragments = _read_state(results_dir)
    _write_atomically(results_dir / "count.txt", f"{count}\n")
    summary = {"primes_below": LIMIT, "count": count, "fragments": fragments}
    _write_atomically(results_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
