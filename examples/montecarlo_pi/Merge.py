"""Sum the batches in results_dir/state.json; finalize() writes pi.txt.

Addition does not care about order, so job.toml sets ordered = false and the
chief merges each result as soon as it arrives. The running totals live in a
file, not in a global, because the merge process may be restarted between
two calls.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from Split import SAMPLES_PER_FRAGMENT

STATE_NAME = "state.json"


def _load(results_dir: Path) -> dict[str, int]:
    """The totals so far, all zero before the first merge."""
    path = results_dir / STATE_NAME
    if not path.exists():
        return {"inside": 0, "samples": 0, "fragments": 0}
    state: dict[str, int] = json.loads(path.read_text())
    return state


def _save(results_dir: Path, state: dict[str, int]) -> None:
    """Write the totals; a crash mid-write leaves the previous state.json intact."""
    path = results_dir / STATE_NAME
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)


def merger(result: int, results_dir: Path) -> None:
    """Add one batch's count of points inside the quarter circle."""
    state = _load(results_dir)
    state["inside"] += result
    # The result is only a count, so the batch size comes from Split.py.
    state["samples"] += SAMPLES_PER_FRAGMENT
    state["fragments"] += 1
    _save(results_dir, state)


def finalize(results_dir: Path) -> None:
    """Write the estimate of pi; state.json stays as the record of the totals."""
    state = _load(results_dir)
    estimate = 4 * state["inside"] / state["samples"]
    (results_dir / "pi.txt").write_text(f"{estimate:.6f}\n")
