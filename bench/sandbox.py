"""The sandbox end to end: child start and per-fragment cost through the real fork server.

    python bench/sandbox.py [--starts N] [--fragments N]

Both figures come from the node's own code (`open_fork_server`, `ForkServer.spawn`,
`Child`), with every layer this machine has, against the same thing with no layer
(`layers=frozenset()`) measured in the same run:

- child start: from the spawn request to the child's ``ready`` (fork, confine, import
  the job's Process.py), then close; median of N. Beside it, from the child's
  /proc/PID/schedstat: the CPU time the child used from its fork to ``ready``, and the
  start less the time the child waited for a CPU, which is close to what a quiet
  machine gives when other work shares this one.
- per fragment: one work child per side, fed the same fragments one request at a time
  (the worst case for overhead: a batch of many shares the round trip); a no-op
  fragment (pipe round trip, pickling, the runtime) and a prime sieve over 20,000
  numbers (job code making few syscalls), both by examples/primes' process(). Median
  per fragment over N, alternating the two children so neither gets a quieter machine.

bench/sandbox_layers.py gives the cost of each layer alone, without the fork server.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from octop2p.engine._children import Child, ForkServer, open_fork_server  # noqa: E402
from octop2p.engine._limits import Limits  # noqa: E402
from sandbox import Policy, probe  # noqa: E402

#: examples/primes' process(): (lo, lo) counts nothing (a no-op), (lo, hi) sieves.
PRIMES = Path(__file__).resolve().parent.parent / "examples" / "primes" / "Process.py"
NOOP = (0, 0)
SIEVE = (0, 20_000)


def spec_for(job: Path, layers: frozenset[str]) -> dict[str, Any]:
    """A work child's spawn spec, as the chief makes it (default limits)."""
    limits = Limits()
    policy = Policy(
        read_paths=(str(job),),
        memory_bytes=limits.memory_mb << 20,
        cpu_seconds=limits.cpu_seconds,
        max_threads=limits.threads,
        layers=layers,
    )
    return {
        "role": "work",
        "kind": "package",
        "job_dir": str(job),
        "script": None,
        "results_dir": None,
        "limits": limits.to_dict(),
        "options": {"partitions": 2},
        "policy": policy.to_dict(),
    }


async def start(fs: ForkServer, spec: dict[str, Any]) -> Child:
    child = await fs.spawn(spec, max_frame=64 << 20)
    reply = await child.receive()
    if reply[0] != "ready":
        raise SystemExit(f"the child said {reply!r}")
    return child


@dataclass
class Starts:
    """Medians, in milliseconds, of N child starts."""

    wall: float  # spawn request -> ready
    cpu: float  # the child's CPU time, fork -> ready
    unqueued: float  # wall less the time the child spent waiting for a CPU


def _schedstat(pid: int) -> tuple[float, float]:
    """(CPU time, run-queue wait) of a process so far, in milliseconds."""
    with open(f"/proc/{pid}/schedstat", "rb") as f:
        cpu, wait = f.read().split()[:2]
    return int(cpu) / 1e6, int(wait) / 1e6


async def start_ms(fs: ForkServer, spec: dict[str, Any], runs: int) -> Starts:
    """Medians from spawn request to ready (the close is not counted)."""
    samples = []
    for _ in range(runs + 1):  # the first warms the fork server's page cache
        started = time.perf_counter()
        child = await start(fs, spec)
        wall = (time.perf_counter() - started) * 1000
        cpu, wait = _schedstat(child.pid)  # it now waits on its request pipe
        samples.append((wall, cpu, wall - wait))
        await child.aclose()
    wall, cpu, unqueued = (statistics.median(column) for column in zip(*samples[1:], strict=True))
    return Starts(wall, cpu, unqueued)


async def fragment_us(children: list[Child], fragment: object, runs: int) -> list[float]:
    """Median microseconds of one fragment's round trip, per child, interleaved."""
    data = pickle.dumps(fragment)
    samples: list[list[float]] = [[] for _ in children]
    for seq in range(runs + 10):  # 10 warm-up rounds
        for i, child in enumerate(children):
            started = time.perf_counter()
            await child.send(["process", [[seq, data]]])
            reply = await child.receive()
            elapsed = time.perf_counter() - started
            if reply[0] != "result":
                raise SystemExit(f"the child said {reply!r}")
            if seq >= 10:
                samples[i].append(elapsed)
    return [statistics.median(s) * 1e6 for s in samples]


async def main_async(starts: int, fragments: int) -> None:
    layers = frozenset(name for name, st in probe().items() if st.available)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job"
        job.mkdir()
        (job / "Process.py").write_bytes(PRIMES.read_bytes())
        confined, bare = spec_for(job, layers), spec_for(job, frozenset())
        async with open_fork_server() as fs:
            print(f"layers: {', '.join(sorted(layers)) or 'none'} (probe())")
            base = await start_ms(fs, bare, starts)
            full = await start_ms(fs, confined, starts)
            print(f"child start, spawn -> ready, median of {starts}:")
            ratio = f"{full.wall / base.wall:.2f}x, +{full.wall - base.wall:.2f} ms"
            print(f"  no layer (baseline)            {base.wall:7.2f} ms")
            print(f"  every layer {full.wall:26.2f} ms  ({ratio}; target <= 10 ms)")
            print("  the same less the child's waits for a CPU (and the child's CPU time):")
            for name, starts_ in (("no layer", base), ("every layer", full)):
                print(f"  {name:<30} {starts_.unqueued:7.2f} ms  (CPU {starts_.cpu:.2f} ms)")
            children = [await start(fs, confined), await start(fs, bare)]
            try:
                for name, fragment in (("no-op fragment", NOOP), (f"sieve of {SIEVE[1]:,}", SIEVE)):
                    ours, theirs = await fragment_us(children, fragment, fragments)
                    print(f"{name}, one per round trip, median of {fragments}:")
                    print(f"  no layer (baseline)            {theirs:7.1f} us")
                    print(
                        f"  every layer                    {ours:7.1f} us  "
                        f"({ours / theirs:.2f}x; target <= 1.2x)"
                    )
            finally:
                for child in children:
                    await child.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--fragments", type=int, default=2000)
    args = parser.parse_args()
    trio.run(main_async, args.starts, args.fragments)
    return 0


if __name__ == "__main__":
    sys.exit(main())
