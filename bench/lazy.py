"""Chief memory with a huge lazy input: 1,000,000 fragments of 1 KiB through `octop2p run`.

    python bench/lazy.py [--fragments N]

The splitter yields 1 GiB of fragments in all; the node must only ever hold a bounded
window of them. Prints the peak RSS (VmHWM) of the node process and of each of its
children, polled from /proc while the job runs. The baseline, measured in the same run,
is the peak RSS of a bare `python -c "import octop2p.cli, trio"`: what the node costs
before it holds any job data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import PeakMemory, octop2p_cmd


def make_job(root: Path, n: int) -> Path:
    job = root / "lazy"
    job.mkdir()
    (job / "Split.py").write_text(
        f"def splitter():\n    for i in range({n}):\n        yield bytes([i % 251]) * 1024\n"
    )
    (job / "Process.py").write_text("def process(fragment):\n    return fragment[0]\n")
    (job / "Merge.py").write_text(
        "total = 0\n"
        "count = 0\n"
        "def merger(result, results_dir):\n"
        "    global total, count\n"
        "    total += result\n"
        "    count += 1\n"
        "def finalize(results_dir):\n"
        "    (results_dir / 'sum.txt').write_text(f'{count} {total}')\n"
    )
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fragments", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.fragments
    base = subprocess.run(
        [
            sys.executable,
            "-c",
            "import octop2p.cli, trio, resource; "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    base_kb = int(base.stdout)
    with tempfile.TemporaryDirectory() as tmp:
        job = make_job(Path(tmp), n)
        out = Path(tmp) / "out"
        started = time.perf_counter()
        proc = subprocess.Popen(
            octop2p_cmd("run", str(job), "-w", "2", "-o", str(out), "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with PeakMemory(proc.pid) as mem:
            stdout, stderr = proc.communicate()
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"octop2p run failed:\n{stderr}")
        count, total = map(int, (out / "sum.txt").read_text().split())
    assert count == n and total == sum(i % 251 for i in range(n)), (count, total)
    report = json.loads(stdout.strip().splitlines()[-1])
    print(f"fragments              {n:,} x 1 KiB ({n / 1024:,.0f} MiB through the chief)")
    rate = n / wall
    print(f"wall                   {wall:.1f} s ({rate:,.0f} fragments/s); "
          f"engine {report['seconds']:.1f} s")
    print(f"baseline (bare import) {base_kb / 1024:7.1f} MiB")
    print(f"node peak RSS          {mem.node_kb / 1024:7.1f} MiB  (target < 150 MiB)")
    for pid, kb in sorted(mem.children_kb.items()):
        print(f"  child {pid:>7}        {kb / 1024:7.1f} MiB")


if __name__ == "__main__":
    main()
