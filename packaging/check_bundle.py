"""Check a built bundle the way a user would start it, and print its size and start time.

    python packaging/check_bundle.py dist/octop2p

Runs the bundled ``octop2p --version`` and ``octop2p run examples/primes`` from a
temporary folder (so nothing of the checkout is on the path), checks the answer,
664579, and prints the figures docs/install.md quotes. Exits 1 on a wrong answer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = "664579"


def folder_bytes(path: Path) -> int:
    """Bytes of every file below `path`, as `du --apparent-size` counts them."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def start_seconds(program: Path, runs: int) -> list[float]:
    """Wall time of `program --version`, each run a fresh process."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([str(program), "--version"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the bundle folder (dist/octop2p)")
    parser.add_argument("--runs", type=int, default=5, help="--version runs to time")
    args = parser.parse_args()
    program = args.bundle.resolve() / "octop2p"
    version = subprocess.run([str(program), "--version"], check=True, capture_output=True,
                             text=True).stdout.strip()
    print(f"bundle: {program} ({version})")
    # An empty environment but PATH: the bundle must not lean on the venv or the checkout.
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/nonexistent")}
    with tempfile.TemporaryDirectory(prefix="octop2p-bundle-") as tmp:
        started = time.perf_counter()
        done = subprocess.run(
            [str(program), "run", str(ROOT / "examples" / "primes"), "-w", "2", "-o", "out"],
            cwd=tmp, env=env, capture_output=True, text=True, timeout=300,
        )
        run_seconds = time.perf_counter() - started
        count = Path(tmp, "out", "count.txt")
        answer = count.read_text().strip() if count.is_file() else None
    if done.returncode != 0 or answer != EXPECTED:
        print(done.stderr, file=sys.stderr)
        print(f"FAILED: octop2p run examples/primes exited {done.returncode} and counted "
              f"{answer!r}, expected {EXPECTED}", file=sys.stderr)
        return 1
    print(f"octop2p run examples/primes -w 2: {answer} (expected {EXPECTED}) "
          f"in {run_seconds:.2f} s, start to exit")
    times = start_seconds(program, args.runs)
    print(f"start time, octop2p --version: median {statistics.median(times):.3f} s "
          f"over {args.runs} runs (min {min(times):.3f} s, max {max(times):.3f} s)")
    size = folder_bytes(args.bundle)
    print(f"bundle size: {size / 1e6:.0f} MB in {sum(1 for _ in args.bundle.rglob('*'))} "
          "files and folders")
    return 0


if __name__ == "__main__":
    sys.exit(main())
