"""Where a work child's MapReduce CPU goes: the guide's wordcount through WorkRole, profiled.

    python bench/mapreduce_profile.py [--files-per-task 8] [--partitions 4] [--profile]

Drives the work role's own `_map` and `_reduce` (the code a sandboxed work child runs)
in this process over the seeded corpus of `wordcount.py` (200 files, about 20 MB), the
tasks cut as given, and prints the map and reduce CPU against one `collections.Counter`
over the same text, measured in the same run; `--profile` adds cProfile's top entries.
No sandbox and no pipes: this isolates the engine's per-pair work from everything else.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pickle
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import ROOT
from wordcount import make_corpus

# Ahead of bench/ (whose sandbox.py would shadow the package); PYTHONPATH, if set, ahead
# of this checkout, to profile another one.
sys.path[0:0] = [*filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)), str(ROOT)]
from sandbox._runtime import WorkRole  # noqa: E402 - after the path is set


def mapfn(key, value):  # the guide's, verbatim
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def reducefn(key, value):
    return key, len(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files-per-task", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        make_corpus(Path(tmp), 200, 75)
        source = {p.name: p.read_text() for p in sorted(Path(tmp, "corpus").glob("*.txt"))}
    role = WorkRole.__new__(WorkRole)
    role.mapfn, role.reducefn, role.combinefn = mapfn, reducefn, None
    role.partitions, role._partition_cache = args.partitions, {}
    items = list(source.items())
    step = args.files_per_task
    tasks = [pickle.dumps(items[i : i + step]) for i in range(0, len(items), step)]

    started = time.process_time()
    expected: Counter[str] = Counter()
    for text in source.values():
        for line in text.splitlines():
            expected.update(word.lower() for word in line.split())
    t_counter = time.process_time() - started

    profile = cProfile.Profile() if args.profile else None
    if profile:
        profile.enable()
    started = time.process_time()
    outputs = [role._map(pickle.loads(task)) for task in tasks]
    t_map = time.process_time() - started
    started = time.process_time()
    reduced = [role._reduce([out[r] for out in outputs]) for r in range(role.partitions)]
    t_reduce = time.process_time() - started
    if profile:
        profile.disable()
    got = {k: v for data in reduced for k, v in pickle.loads(data)}
    assert got == {w: (w, n) for w, n in expected.items()}, "counts differ from Counter's"
    size = sum(len(p) for out in outputs for p in out)
    print(f"{len(tasks)} tasks, {args.partitions} partitions, {size / 1e6:.1f} MB of partitions")
    print(f"Counter {t_counter:.2f} s CPU; map {t_map:.2f} s ({t_map / t_counter:.2f}x), "
          f"reduce {t_reduce:.2f} s ({t_reduce / t_counter:.2f}x)")
    if profile:
        pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
