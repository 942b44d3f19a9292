"""The octo.py guide's own wordcount against its peers, in one run, alternating rounds.

    python bench/peers.py [--quick] [--rounds 3] [--files 200] [--kb 75] [--only ...]
                          [--compare TREE]

The job is `examples/wordcount.py` copied verbatim (no combiner) next to a seeded corpus
in `books/` (200 files, about 20 MB, the Zipf corpus of `wordcount.py`). Every round
runs each contender once, in an order that rotates from round to round, so that load
from other work on the machine hits them all; every contender's counts are checked
equal to Counter's. Contenders:

- `collections.Counter` in this process: the baseline every ratio is taken against,
  from the same round;
- `multiprocessing.Pool(2)`, a Counter per file, pool start included;
- Dask bag over the files, a Counter per file folded together, on a
  `LocalCluster(n_workers=2, threads_per_worker=1)` started before timing;
- `octop2p run wordcount.py -w 2`, the whole command;
- `octop2p submit wordcount.py` to a chief (not donating) with two donor nodes of one
  core each, on 127.0.0.1, the whole command (the nodes started before timing).

`--quick`: 2 rounds over 60 files. `--compare TREE` adds `run` and `submit` (to a
swarm of its own) from another checkout, as more contenders of the same rounds. Prints
each round and the range of ratios.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, run_octop2p
from wordcount import count_file, counter_baseline, make_corpus, pool_baseline

Counts = collections.Counter[str]


def merge(total: Counts, more: Counts) -> Counts:
    """Fold one file's Counter into the running total (in place: no copy per file)."""
    total.update(more)
    return total


def read_final(path: Path) -> Counts:
    """The guide's `final` prints `word ('word', n)` per line."""
    counts: Counts = collections.Counter()
    for text in path.read_text().splitlines():
        word, pair = text.split(" ", 1)
        key, n = ast.literal_eval(pair)
        assert key == word, text
        counts[word] = n
    return counts


class Dask:
    """A Dask bag on a LocalCluster(2 x 1 thread) started once, before any timing."""

    def __enter__(self) -> Dask:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        self.client = Client(self.cluster)
        self.client.submit(count_file, Path(__file__)).result()  # workers import the code
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.cluster.close()

    def count(self, files: list[Path]) -> Counts:
        import dask.bag as db

        bag = db.from_sequence(files, npartitions=len(files))
        result = bag.map(count_file).fold(merge, merge, initial=collections.Counter())
        return result.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds over 60 files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--kb", type=int, default=75, help="about this many KB per file")
    parser.add_argument("--only", default="pool,dask,run,submit",
                        help="comma-separated subset of pool,dask,run,submit")
    parser.add_argument("--compare", type=Path, metavar="TREE",
                        help="also time run and submit from this checkout (PYTHONPATH)")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.files = 2, 60
    only = set(args.only.split(","))
    # Bytecode caches written and used, as for installed software: without them every
    # `octop2p` process would compile the package again (PYTHONDONTWRITEBYTECODE is set
    # in some environments, and would add 0.1-0.2 s to each run).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    # The octop2p of this checkout, not whichever the venv has installed.
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    os.chdir(ROOT)  # node processes must not find bench/protocol.py before protocol/
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        job = tmp / "job"  # the job's folder holds the script and books/, nothing else
        job.mkdir()
        make_corpus(job, args.files, args.kb)
        (job / "corpus").rename(job / "books")
        (job / "wordcount_bench.py").unlink()
        script = job / "wordcount.py"
        shutil.copy(ROOT / "examples" / "wordcount.py", script)
        files = sorted((job / "books").glob("*.txt"))
        expected = counter_baseline(files)
        size = sum(p.stat().st_size for p in files)
        print(f"corpus: {len(files)} files, {size / 1e6:.1f} MB, {sum(expected.values()):,} "
              f"words, {len(expected):,} distinct; examples/wordcount.py verbatim; "
              f"{args.rounds} rounds; load {os.getloadavg()[0]:.1f}")
        run(tmp, script, files, expected, args.rounds, only, args.compare)


def run(
    tmp: Path,
    script: Path,
    files: list[Path],
    expected: Counts,
    rounds: int,
    only: set[str],
    compare: Path | None = None,
) -> None:
    swarms: list[Any] = []
    dask = None
    contenders: dict[str, Callable[[int], Counts]] = {
        "Counter": lambda i: counter_baseline(files),
    }
    if "pool" in only:
        contenders["Pool(2)"] = lambda i: pool_baseline(files)
    try:
        if "dask" in only:
            dask = Dask().__enter__()
            contenders["Dask bag"] = lambda i: dask.count(files)  # type: ignore[union-attr]
        contenders |= octop2p_contenders(tmp, script, only, swarms, "")
        if compare is not None:
            with checkout(compare, tmp):
                contenders |= octop2p_contenders(tmp, script, only, swarms, compare)
        times = rounds_of(contenders, expected, rounds)
    finally:
        for swarm in swarms:
            swarm.close()
        if dask is not None:
            dask.__exit__()
    report(times)


def octop2p_contenders(tmp: Path, script: Path, only: set[str], swarms: list[Any],
                       tree: Path | str) -> dict[str, Callable[[int], Counts]]:
    """`run -w 2` and `submit` (its swarm started now, added to ``swarms``), from this
    checkout or, with ``tree``, from that one."""
    from network import Swarm

    label = f" from {Path(tree).name}" if tree else ""
    tag = "-compared" if tree else ""  # in file names
    where = (lambda: checkout(Path(tree), tmp)) if tree else contextlib.nullcontext
    contenders: dict[str, Callable[[int], Counts]] = {}
    if "run" in only:

        def octop2p_run(i: int) -> Counts:
            out = tmp / f"run{tag}{i}"
            with where():
                run_octop2p(script, "-w", "2", "-o", str(out), cwd=tmp)
            return read_final(out / "output.txt")

        contenders["octop2p run -w 2" + label] = octop2p_run
    if "submit" in only:
        swarm = Swarm(tmp / f"swarm{tag}")
        swarms.append(swarm)
        swarm.start_workers()

        def octop2p_submit(i: int) -> Counts:
            out = tmp / f"submit{tag}{i}"
            with where():
                swarm.submit(script, out, cwd=tmp)
            return read_final(out / "output.txt")

        contenders["octop2p submit, chief + 2 donors" + label] = octop2p_submit
    return contenders


@contextlib.contextmanager
def checkout(tree: Path, cwd: Path) -> Iterator[None]:
    """Commands and nodes started meanwhile run ``tree``'s octop2p: it is their
    PYTHONPATH, and their working directory (which `python -m` puts first on sys.path)
    holds no package of this checkout."""
    saved, here = os.environ["PYTHONPATH"], os.getcwd()
    os.environ["PYTHONPATH"] = str(tree.resolve())
    os.chdir(cwd)
    try:
        yield
    finally:
        os.environ["PYTHONPATH"] = saved
        os.chdir(here)


def rounds_of(
    contenders: dict[str, Callable[[int], Counts]], expected: Counts, rounds: int
) -> dict[str, list[float]]:
    """Each contender once per round, the order rotated each round; seconds per round."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            started = time.perf_counter()
            got = contenders[name](i)
            times[name].append(time.perf_counter() - started)
            if got != expected:
                sys.exit(f"{name}: counts differ from Counter's")
        print(f"round {i + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names),
              flush=True)
    return times


def report(times: dict[str, list[float]]) -> None:
    base = times["Counter"]
    print(f"\n{'contender':34} {'seconds':>14} {'x Counter (per round)':>24}")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        median = sorted(ratios)[len(ratios) // 2]
        print(f"{name:34} {min(ts):6.2f}-{max(ts):5.2f} s "
              f"{min(ratios):10.2f}-{max(ratios):.2f}  median {median:.2f}")


if __name__ == "__main__":
    main()
