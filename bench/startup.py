"""How soon `octop2p` answers and reaches a job, against a bare interpreter, alternating.

    python bench/startup.py [--rounds 10] [--compare TREE]

Each round starts, in an order that rotates from round to round so that load from other
work on the machine hits them all:

- `python -c pass`: the bare interpreter, the baseline every ratio is taken against;
- `python -m octop2p --version`;
- `python -m octop2p run tiny.py -w 1`: "job" is the time from starting the command to
  the moment the job's own code runs (the script's top level in the first sandboxed
  child, which reads `time.time()` into its `source`; `final` prints it), "whole" the
  whole command (sandboxed children for split, map, reduce and final, the results'
  signed manifest).

Bytecode caches are written and used, as for an installed package (the figures are not
the first run's): PYTHONDONTWRITEBYTECODE is dropped from the environment. `--compare
TREE` adds the same two commands from another checkout (its own package on PYTHONPATH).
Prints the fastest and the median of each, and the ratio of medians to the bare
interpreter's median of the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT

JOB = """\
import time

source = {"t": repr(time.time())}


def mapfn(key, value):
    yield key, value


def reducefn(key, values):
    return values[0]


def final(key, value):
    print(value)
"""


def _env(tree: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(tree), OCTOP2P_HOME=str(home), OCTOP2P_PROGRESS="0")
    return env


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Wall seconds of ``cmd`` and its stdout; the wall clock when it started is printed
    by the tiny job, so the start is taken on the same clock."""
    started = time.time()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}")
    return time.time() - started, f"{started!r} {proc.stdout}"


def contenders(trees: dict[str, Path], tmp: Path) -> dict[str, tuple[list[str], Path]]:
    py = sys.executable
    job = tmp / "tiny.py"
    job.write_text(JOB)
    out: dict[str, tuple[list[str], Path]] = {"python -c pass": ([py, "-c", "pass"], ROOT)}
    for label, tree in trees.items():
        out[f"{label} --version"] = ([py, "-m", "octop2p", "--version"], tree)
        out[f"{label} run"] = ([py, "-m", "octop2p", "run", str(job), "-w", "1",
                                "-o", str(tmp / "out")], tree)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--compare", type=Path, metavar="TREE")
    args = parser.parse_args()
    trees = {"this": ROOT}
    if args.compare:
        trees["other"] = args.compare.resolve()
    with open("/proc/loadavg") as f:
        print(f"load average at start: {f.read().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp_name:
        tmp = Path(tmp_name)
        runs = contenders(trees, tmp)
        walls: dict[str, list[float]] = {name: [] for name in runs}
        to_job: dict[str, list[float]] = {name: [] for name in runs if name.endswith(" run")}
        names = list(runs)
        for round_ in range(args.rounds + 1):  # round 0 writes the bytecode caches
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                cmd, tree = runs[name]
                shutil.rmtree(tmp / "out", ignore_errors=True)
                wall, out = timed(cmd, _env(tree, tmp / f"home-{name[:5]}"), tmp)
                if round_ == 0:
                    continue
                walls[name].append(wall)
                if name in to_job:
                    started, job_time = out.split()[:2]
                    to_job[name].append(float(job_time) - float(started))
        with open("/proc/loadavg") as f:
            print(f"load average at end: {f.read().split()[:3]}")
    base = statistics.median(walls["python -c pass"])
    print(f"{args.rounds} rounds; fastest / median wall, ratio of medians to `python -c pass`")
    for name, values in walls.items():
        med = statistics.median(values)
        print(f"  {name:24} {min(values):.3f} / {med:.3f} s  ({med / base:.1f}x)")
        if name in to_job:
            job = to_job[name]
            print(f"  {name + ', to the job':24} {min(job):.3f} / {statistics.median(job):.3f} s")


if __name__ == "__main__":
    main()
