"""Cost of confinement: fork + confine() per layer, against a bare fork.

    python bench/sandbox_layers.py [--runs N]

Each sample forks this (small) process; the child applies the layers and exits; the
parent waits for it. The baseline, measured in the same run, is fork + exit with no
layer. Prints the median of N samples (default 50) and the ratio to the baseline.
bench/sandbox.py (end to end, through the fork server) is the other half.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sandbox import ALL_LAYERS, Policy, confine, probe  # noqa: E402
from sandbox._policy import LAYER_ORDER  # noqa: E402


def sample(policy: Policy | None) -> float:
    """Seconds from fork() to the parent reaping a child that confined itself and exited."""
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if policy is not None:
                confine(policy)
        except BaseException:  # noqa: BLE001 - reported through the exit code
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"confine() failed in the child for layers {policy and policy.layers}")
    return elapsed


def median_ms(policy: Policy | None, runs: int) -> float:
    sample(policy)  # warm up: page-table copy-on-write, first imports
    return statistics.median(sample(policy) for _ in range(runs)) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    working = {name for name, status in probe().items() if status.available}
    with tempfile.TemporaryDirectory() as root:
        job, results = Path(root, "job"), Path(root, "results")
        job.mkdir()
        results.mkdir()
        base = Policy(read_paths=(str(job),), write_paths=(str(results),),
                      memory_bytes=512 << 20, cpu_seconds=60, fsize_bytes=1 << 20)
        baseline = median_ms(None, args.runs)
        print(f"fork + exit, no layer (baseline): {baseline:7.2f} ms  (median of {args.runs})")
        for layer in LAYER_ORDER:
            if layer not in working:
                print(f"  + {layer:<29} unavailable here")
                continue
            # netns rides on userns for an unprivileged user, as in confine() itself.
            layers = {layer, "userns"} if layer == "netns" and os.geteuid() else {layer}
            ms = median_ms(Policy(**{**vars(base), "layers": frozenset(layers)}), args.runs)
            print(f"  + {layer:<29} {ms:7.2f} ms  ({ms / baseline:4.1f}x)")
        every = ALL_LAYERS & working
        ms = median_ms(Policy(**{**vars(base), "layers": frozenset(every)}), args.runs)
        print(f"fork + confine(), all layers:     {ms:7.2f} ms  ({ms / baseline:4.1f}x baseline, "
              f"+{ms - baseline:.2f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
