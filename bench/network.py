"""The networked path: a chief and two donating worker nodes on 127.0.0.1 (issue #4).

    python bench/network.py [--quick] [--only wordcount,noop,startup,lazy] [--repeat 3]

Three `octop2p node` processes, each in its own temporary home, in one swarm, linked by
static peers (`--peer`, no mDNS): the chief does not donate, each worker donates one
core. Everything a user pays for is on: the handshake, the encrypted channel, signed
fragments and results, sandboxed children on both sides. Jobs go in through
`octop2p submit` as a user would type it (one CLI process per job, timed whole).

Figures, each against a baseline measured in this run:

- wordcount of the seeded 20 MB corpus of `wordcount.py`, against one
  `collections.Counter` in this process (target: at most 1.6x); best of `--repeat`
  runs of each, alternated. `octop2p run -w 2` on the same script is shown alongside,
  to tell the network's share from the engine's;
- 20,000 no-op fragments (`overhead.py`'s job), against Dask's
  `LocalCluster(n_workers=2, threads_per_worker=1)` (target: at least 2,000/s and 4x);
- time from a worker node's process start until the chief counts its first result,
  with a job already waiting for workers (target: at most 2 s), by static peer and by
  mDNS on loopback; the baseline is the same node's start until it listens;
- the chief node's peak RSS with a 1,000,000-fragment lazy splitter (`lazy.py`'s job),
  against the same node idle before the job (target: under 150 MB). It takes several
  minutes; `--quick` runs 100,000 fragments instead and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trio
from _common import ROOT, PeakMemory, _vm_hwm_kb, run_octop2p
from lazy import make_job as make_lazy_job
from overhead import dask_rate
from overhead import make_job as make_noop_job
from wordcount import counter_baseline, make_corpus

sys.path.insert(0, str(ROOT))
from octop2p.net._control import ControlClient  # noqa: E402 - after the path is set
from tests.integration.nodes import NodeProcess, make_swarm  # noqa: E402

SUBMIT_TIMEOUT = 1800.0


class Swarm:
    """A chief (not donating) and donating one-core workers, as node processes."""

    def __init__(self, root: Path, workers: int = 2, *, discovery: bool = False) -> None:
        names = ["chief", *(f"w{i + 1}" for i in range(workers))]
        self.homes = make_swarm(root, names)
        self.discovery = discovery
        self.nodes: list[NodeProcess] = []
        self.chief = self._start(self.homes[0], "--no-donate")
        self.nodes.append(self.chief)

    def _start(self, home: Path, *args: str) -> NodeProcess:
        extra = () if self.discovery else ("--no-discovery",)
        return NodeProcess(home, *extra, *args)

    def start_worker(self, index: int) -> NodeProcess:
        """Start worker ``index`` (1-based); it knows the chief unless discovery is on."""
        peer = () if self.discovery else ("--peer", self.chief.address)
        node = self._start(self.homes[index], "--donate", "--cores", "1", *peer)
        self.nodes.append(node)
        return node

    def start_workers(self) -> None:
        for i in range(1, len(self.homes)):
            self.start_worker(i)
        self.chief.wait_for_peers(len(self.homes) - 1, donating=True)

    def submit(self, job: Path, out: Path, cwd: Path | None = None) -> tuple[float, dict]:
        """``octop2p submit JOB --json -o OUT`` on the chief; (wall seconds, its report)."""
        started = time.perf_counter()
        proc = self.chief.cli("submit", str(job), "--json", "-o", str(out),
                              timeout=SUBMIT_TIMEOUT)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"octop2p submit failed ({proc.returncode}):\n{proc.stderr}\n"
                     f"{self.chief.read_log()[-4000:]}")
        return wall, json.loads(proc.stdout.strip().splitlines()[-1])

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.stop()


def line(label: str, value: str, note: str = "") -> None:
    print(f"  {label:<46} {value:>12}  {note}")


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


# --- the figures ---------------------------------------------------------------------------


def bench_wordcount(swarm: Swarm, tmp: Path, repeat: int) -> None:
    root = tmp / "wordcount"
    root.mkdir()
    make_corpus(root, files=200, kb=100)
    files = sorted((root / "corpus").glob("*.txt"))
    size = sum(p.stat().st_size for p in files)
    counter_times, ours, local = [], [], []
    for i in range(repeat):  # alternated, so that a burst of load hits both sides
        started = time.perf_counter()
        expected = counter_baseline(files)
        counter_times.append(time.perf_counter() - started)
        out = root / f"out{i}"
        wall, report = swarm.submit(root / "wordcount_bench.py", out)
        ours.append(wall)
        got = {}
        for text in (out / "output.txt").read_text().splitlines():
            key, (_, n) = json.loads(text)
            got[key] = n
        assert got == dict(expected), "octop2p's counts differ from Counter's"
        local.append(run_octop2p(root / "wordcount_bench.py", "-w", "2",
                                 "-o", str(root / f"local{i}"), cwd=root)[0])
    t_counter, wall, t_local = min(counter_times), min(ours), min(local)
    ratio = wall / t_counter
    print(f"wordcount: {size / 1e6:.1f} MB, {len(files)} files, {sum(expected.values()):,} "
          f"words, {len(expected):,} distinct; counts equal Counter's; best of {repeat}")
    line("collections.Counter, 1 process", f"{t_counter:.2f} s", "(baseline)")
    line("octop2p submit, chief + 2 workers", f"{wall:.2f} s",
         f"{ratio:.2f}x Counter; target <= 1.6x: {verdict(ratio <= 1.6)}")
    line("  results by worker", ", ".join(str(n) for n in report["workers"].values()))
    line("  for comparison: octop2p run -w 2, no network", f"{t_local:.2f} s",
         f"{t_local / t_counter:.2f}x Counter")


def bench_noop(swarm: Swarm, tmp: Path, n: int) -> None:
    job = make_noop_job(tmp, n)
    wall, report = swarm.submit(job, tmp / "noop-out")
    assert sum(report["workers"].values()) == n, report
    ours = n / wall
    theirs = dask_rate(n)
    ratio = ours / theirs
    print(f"no-op fragments: {n:,}")
    line("dask LocalCluster(2 x 1 thread) map", f"{theirs:,.0f} /s", "(baseline)")
    line("octop2p submit, chief + 2 workers", f"{ours:,.0f} /s",
         f"({wall:.2f} s) {ratio:.2f}x Dask; target >= 2,000/s and >= 4x: "
         f"{verdict(ours >= 2000 and ratio >= 4)}")
    line("  results by worker", ", ".join(str(n) for n in report["workers"].values()))


async def _time_to_work(swarm: Swarm, job: Path, index: int) -> tuple[float, float]:
    """Submit ``job`` (no worker yet), start worker ``index``; seconds from its process
    start to (listening, the chief counting its first result)."""
    chief = ControlClient(swarm.chief.home / "control.sock")
    status = await chief.call("submit", path=str(job))
    first: list[float] = []

    async def watch(task_status: trio.TaskStatus[None]) -> None:
        events = chief.events()
        task_status.started()
        async for event in events:
            if (event["event"] == "progress" and event.get("job") == status["job"]
                    and sum(event["workers"].values()) > 0):
                first.append(event["time"])  # the chief's own clock, when it counted
                return

    async with trio.open_nursery() as nursery:
        await nursery.start(watch)
        await trio.sleep(0.2)  # the events stream is open on the chief's side too
        started = time.time()
        await trio.to_thread.run_sync(swarm.start_worker, index)
        listening = time.time() - started
        with trio.fail_after(60):
            while not first:
                await trio.sleep(0.01)
    await chief.call("wait", job=status["job"])
    return listening, first[0] - started


def bench_startup(tmp: Path) -> None:
    (tmp / "startup").mkdir()
    job = make_noop_job(tmp / "startup", 200)
    print("time from a worker node's start to its first result counted by the chief")
    for discovery in (False, True):
        how = "mDNS on loopback" if discovery else "static peer"
        swarm = Swarm(tmp / ("mdns" if discovery else "static"), workers=1,
                      discovery=discovery)
        try:
            try:
                listening, working = trio.run(_time_to_work, swarm, job, 1)
            except trio.TooSlowError:
                line(f"{how}", "no work in 60 s", swarm.nodes[-1].read_log()[-2000:])
                continue
        finally:
            swarm.close()
        line(f"{how}: node listening (baseline)", f"{listening:.2f} s")
        line(f"{how}: first result counted", f"{working:.2f} s",
             f"{working / listening:.1f}x; target <= 2 s: {verdict(working <= 2)}")


def bench_lazy(swarm: Swarm, tmp: Path, n: int) -> None:
    job = make_lazy_job(tmp, n)
    idle_kb = _vm_hwm_kb(swarm.chief.proc.pid)
    with PeakMemory(swarm.chief.proc.pid) as mem:
        wall, report = swarm.submit(job, tmp / "lazy-out")
    count, total = map(int, (tmp / "lazy-out" / "sum.txt").read_text().split())
    assert count == n and total == sum(i % 251 for i in range(n)), (count, total)
    peak = mem.node_kb / 1024
    print(f"lazy splitter: {n:,} fragments of 1 KiB ({n / 1024:,.0f} MiB through the chief)"
          f", {wall:.0f} s, {n / wall:,.0f} fragments/s")
    line("chief node idle, before the job", f"{idle_kb / 1024:.1f} MiB", "(baseline)")
    line("chief node peak RSS (VmHWM)", f"{peak:.1f} MiB",
         f"{peak / (idle_kb / 1024):.2f}x idle; target < 150 MB: "
         f"{verdict(mem.node_kb * 1024 < 150e6)}")
    line("  results by worker", ", ".join(str(n) for n in report["workers"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="100,000 lazy fragments instead of 1,000,000")
    parser.add_argument("--only", default="wordcount,noop,startup,lazy",
                        help="comma-separated subset of wordcount,noop,startup,lazy")
    parser.add_argument("--fragments", type=int, default=20_000, help="no-op fragments")
    parser.add_argument("--repeat", type=int, default=3,
                        help="wordcount runs; the best of each side is kept")
    args = parser.parse_args()
    only = set(args.only.split(","))
    lazy_n = 100_000 if args.quick else 1_000_000
    # Child processes put their working directory first on sys.path: bench/protocol.py
    # must not shadow the protocol package when this runs from bench/.
    os.chdir(ROOT)
    print(f"chief + 2 worker nodes (1 core each) on 127.0.0.1{'; --quick' if args.quick else ''}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if only & {"wordcount", "noop"}:
            swarm = Swarm(tmp / "swarm")
            try:
                swarm.start_workers()
                if "wordcount" in only:
                    bench_wordcount(swarm, tmp, args.repeat)
                if "noop" in only:
                    bench_noop(swarm, tmp, args.fragments)
            finally:
                swarm.close()
        if "lazy" in only:
            # A fresh chief: VmHWM is a high-water mark over the process's whole life.
            swarm = Swarm(tmp / "lazy-swarm")
            try:
                swarm.start_workers()
                bench_lazy(swarm, tmp, lazy_n)
            finally:
                swarm.close()
        if "startup" in only:
            bench_startup(tmp)


if __name__ == "__main__":
    main()
