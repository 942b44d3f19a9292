"""Per-fragment overhead: 20,000 no-op fragments through `octop2p run -w 2`, against Dask.

    python bench/overhead.py [--fragments N]

Both sides run the same no-op on 2 worker processes. octop2p's figure includes
everything a user waits for (interpreter start, fork server, sandboxed children,
splitter, merger); Dask's LocalCluster is timed after the cluster has started, which
favours Dask.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import run_octop2p


def noop(x: int) -> int:
    return x


def make_job(root: Path, n: int) -> Path:
    job = root / "noop"
    job.mkdir()
    (job / "Split.py").write_text(f"def splitter():\n    yield from range({n})\n")
    (job / "Process.py").write_text("def process(fragment):\n    return fragment\n")
    (job / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    return job


def dask_rate(n: int) -> float:
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        client.gather(client.map(noop, range(100), pure=False))  # warm up
        started = time.perf_counter()
        client.gather(client.map(noop, range(n), pure=False))
        return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=20_000)
    args = parser.parse_args()
    n = args.fragments
    with tempfile.TemporaryDirectory() as tmp:
        job = make_job(Path(tmp), n)
        wall, report = run_octop2p(job, "-w", "2", "-o", str(Path(tmp) / "out"))
    assert report["fragments"] == n, report
    ours_wall = n / wall
    ours_engine = n / report["seconds"]
    theirs = dask_rate(n)
    print(f"fragments                 {n}")
    print(f"octop2p run, whole command {ours_wall:10,.0f} fragments/s  ({wall:.2f} s)")
    print(
        f"octop2p engine only        {ours_engine:10,.0f} fragments/s  ({report['seconds']:.2f} s)"
    )
    print(f"dask LocalCluster(2)       {theirs:10,.0f} fragments/s")
    print(f"ratio octop2p/dask         {ours_wall / theirs:10.2f}x  (target >= 2x, and >= 5,000/s)")


if __name__ == "__main__":
    main()
