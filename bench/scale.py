"""How a chief's cost grows with its donors: 1 to 64 donor nodes on 127.0.0.1.

    python bench/scale.py [--quick] [--donors 1,8,32,64] [--noop 20000] [--lazy 100000]

For each count N: a chief (not donating) and N donor nodes of one core each, every one
an `octop2p node` process in its own home, one swarm, static peers. The donors start
all at once; then the chief runs, through `octop2p submit`, a job of no-op fragments
(`overhead.py`'s) and a lazy job of 1 KiB fragments (`lazy.py`'s). Figures, for the
chief node's own process (its sandboxed children excluded):

- seconds from the donors' start until the chief has linked all N (trusted, donating);
- RSS per linked peer: the chief's RSS with N peers linked, less its RSS before any
  donor started, over N;
- CPU seconds per fragment (user + system, from /proc) for each job;
- peak RSS (VmHWM) over the whole run.

On two cores, N donor processes contend with the chief for the CPU: throughput at
large N measures contention, not scaling. The per-fragment and per-peer costs are the
figures that extrapolate. `--quick`: 1, 4 and 8 donors, 2,000 and 10,000 fragments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio
from _common import ROOT, PeakMemory, _vm_hwm_kb
from lazy import make_job as make_lazy_job
from network import Swarm
from overhead import make_job as make_noop_job

sys.path.insert(0, str(ROOT))
from octop2p.net._control import ControlClient  # noqa: E402 - after the path is set

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (its children not included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def linked(chief: Path, n: int, timeout: float) -> None:
    """Wait until the chief has ``n`` trusted, donating peers linked."""
    client = ControlClient(chief / "control.sock")
    with trio.fail_after(timeout):
        while True:
            peers = await client.call("peers")
            if sum(1 for p in peers if p["trusted"] and p["donating"]) >= n:
                return
            await trio.sleep(0.05)


def one_size(root: Path, n: int, noop: int, lazy: int) -> dict[str, float]:
    """Every figure for a chief with ``n`` donors."""
    swarm = Swarm(root / f"swarm{n}", workers=n)
    pid = swarm.chief.proc.pid
    try:
        time.sleep(0.5)  # the chief settles (its fork server, its first allocations)
        idle_kb = rss_kb(pid)
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(swarm.start_worker, range(1, n + 1)))
        trio.run(linked, swarm.chief.home, n, 60 + 2 * n)
        link_s = time.perf_counter() - started
        per_peer_kb = (rss_kb(pid) - idle_kb) / n
        figures = {"donors": n, "link_s": link_s, "idle_mib": idle_kb / 1024,
                   "per_peer_mib": per_peer_kb / 1024}
        jobs = root / f"jobs{n}"
        jobs.mkdir()
        with PeakMemory(pid):
            for name, job, count in (
                ("noop", make_noop_job(jobs, noop), noop),
                ("lazy", make_lazy_job(jobs, lazy), lazy),
            ):
                before = cpu_seconds(pid)
                wall, report = swarm.submit(job, root / f"{name}{n}-out")
                assert sum(report["workers"].values()) == count, report
                figures[f"{name}_cpu_us"] = (cpu_seconds(pid) - before) / count * 1e6
                figures[f"{name}_per_s"] = count / wall
                figures[f"{name}_workers"] = len(report["workers"])
        figures["peak_mib"] = _vm_hwm_kb(pid) / 1024
        return figures
    finally:
        swarm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1, 4, 8 donors; fewer fragments")
    parser.add_argument("--donors", default="1,8,32,64")
    parser.add_argument("--noop", type=int, default=20_000)
    parser.add_argument("--lazy", type=int, default=100_000)
    args = parser.parse_args()
    if args.quick:
        args.donors, args.noop, args.lazy = "1,4,8", 2_000, 10_000
    counts = [int(x) for x in args.donors.split(",")]
    os.chdir(ROOT)  # node processes must not find bench/protocol.py before protocol/
    print(f"chief + N one-core donors on 127.0.0.1; {args.noop:,} no-op and {args.lazy:,} "
          f"lazy fragments; load {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    print(f"{'donors':>6} {'linked':>8} {'idle':>8} {'per peer':>9} "
          f"{'no-op CPU/frag':>15} {'no-op/s':>8} {'lazy CPU/frag':>14} {'lazy/s':>8} "
          f"{'peak RSS':>9} {'used':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            f = one_size(Path(tmp), n, args.noop, args.lazy)
            print(f"{n:>6} {f['link_s']:>7.2f}s {f['idle_mib']:>6.1f}MiB "
                  f"{f['per_peer_mib']:>7.2f}MiB {f['noop_cpu_us']:>12.0f} us "
                  f"{f['noop_per_s']:>8,.0f} {f['lazy_cpu_us']:>11.0f} us "
                  f"{f['lazy_per_s']:>8,.0f} {f['peak_mib']:>6.1f}MiB "
                  f"{f['noop_workers']:>2}/{f['lazy_workers']:<2}", flush=True)


if __name__ == "__main__":
    main()
