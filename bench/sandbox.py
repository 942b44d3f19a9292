"""The sandbox end to end: child start and per-fragment cost through the real fork server.

    python bench/sandbox.py [--starts N] [--fragments N]

Both figures come from the node's own code (`open_fork_server`, `ForkServer.spawn`,
`Child`), with every layer this machine has, against the same thing with no layer
(`layers=frozenset()`) measured in the same run:

- child start: from the spawn request to the child's ``ready`` (fork, confine, import
  the job's Process.py), then close; median of N.
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


async def start_ms(fs: ForkServer, spec: dict[str, Any], runs: int) -> float:
    """Median milliseconds from spawn request to ready (the close is not counted)."""
    samples = []
    for _ in range(runs + 1):  # the first warms the fork server's page cache
        started = time.perf_counter()
        child = await start(fs, spec)
        samples.append(time.perf_counter() - started)
        await child.aclose()
    return statistics.median(samples[1:]) * 1000


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
            print(f"  no layer (baseline)            {base:7.2f} ms")
            print(
                f"  every layer                    {full:7.2f} ms  ({full / base:.2f}x, "
                f"+{full - base:.2f} ms; target <= 10 ms)"
            )
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
