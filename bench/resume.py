"""What faults cost a job: the tail (one slow worker), with backup tasks on and off.

    nice python bench/resume.py [--only tail] [--repeat 2] [--slow-by signals|cgroup]

A chief (not donating) and three donor nodes of one core each on 127.0.0.1, as
`bench/network.py` starts them.

- **tail**: a CPU-bound job (every fragment burns the same CPU time, then returns i * i)
  on three donors, against the same job when one donor is slowed to about 5% of a core:
  with backup tasks on (`backup_tasks = true`, the default) and off. `--slow-by
  signals` (the default) slows it with a SIGSTOP/SIGCONT duty cycle on its processes
  (node and sandboxed children: 5 ms running in every 100 ms); `--slow-by cgroup` puts
  them in a cgroup v1 `cpu` group with a quota of 5 ms per 100 ms, where the machine
  lets us. Target: at most 1.3x the job with no slow worker, with backups on. The
  rounds alternate, the best of `--repeat` is kept, and every run's results are
  checked byte for byte against the answer computed here.

Each figure is one function taking the parsed arguments and a scratch folder; `FIGURES`
maps `--only`'s names to them (more figures: the journal's cost, a chief crash at 50%).
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from _common import ROOT
from network import Swarm, line, verdict

sys.path.insert(0, str(ROOT))
from tests.integration.nodes import NodeProcess  # noqa: E402 - after the path is set

SHARE = 0.05  # of one core, for the slow worker
PERIOD = 0.1  # seconds: the duty cycle's, and the cgroup quota's period
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


# --- slowing one node down -------------------------------------------------------------


@contextmanager
def duty_cycle(node: NodeProcess, share: float = SHARE) -> Iterator[None]:
    """``node`` and its children run ``share`` of every PERIOD, stopped the rest."""
    stop = threading.Event()

    def cycle() -> None:
        pids: list[int] = []
        try:
            for turn in itertools.count():
                if turn % 10 == 0:  # a new child now and then: look again every second
                    pids = node.processes()
                node.signal_all(signal.SIGCONT, pids)
                if stop.wait(share * PERIOD):
                    break
                node.signal_all(signal.SIGSTOP, pids)
                time.sleep((1 - share) * PERIOD)
        finally:
            node.signal_all(signal.SIGCONT)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def cpu_quota(node: NodeProcess, share: float = SHARE) -> Iterator[None]:
    """``node`` and its children (present and future) in a cgroup v1 `cpu` group with
    a quota of ``share`` of one core."""
    group = CGROUP_V1 / f"octop2p-bench-{os.getpid()}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text(str(int(PERIOD * 1e6)))
        (group / "cpu.cfs_quota_us").write_text(str(int(share * PERIOD * 1e6)))
        for pid in node.processes():
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            try:
                (CGROUP_V1 / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # it ended meanwhile
        group.rmdir()


SLOWERS: dict[str, Callable[[NodeProcess], AbstractContextManager[None]]] = {
    "signals": duty_cycle, "cgroup": cpu_quota}


def cgroup_works() -> bool:
    try:
        probe = CGROUP_V1 / f"octop2p-probe-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
        return True
    except OSError:
        return False


# --- the figures -------------------------------------------------------------------------


def make_cpu_job(root: Path, name: str, n: int, cpu: float, backups: bool) -> Path:
    """``n`` fragments, each burning ``cpu`` seconds of CPU time, then returning i * i."""
    files = {
        "Split.py": f"def splitter():\n    yield from range({n})\n",
        "Process.py": ("import time\n\n"
                       "def process(i):\n"
                       "    start = time.process_time()\n"
                       f"    while time.process_time() - start < {cpu}:\n"
                       "        pass\n"
                       "    return i * i\n"),
        "Merge.py": ("def merger(result, results_dir):\n"
                     "    with open(results_dir / 'out.txt', 'a') as f:\n"
                     "        f.write(f'{result}\\n')\n"),
        "job.toml": f"backup_tasks = {str(backups).lower()}\n",
    }
    job = root / name
    job.mkdir()
    for file, text in files.items():
        (job / file).write_text(text)
    return job


def bench_tail(args: argparse.Namespace, tmp: Path) -> None:
    n, cpu = args.fragments, args.cpu
    expected = "".join(f"{i * i}\n" for i in range(n))
    jobs = {on: make_cpu_job(tmp, f"tail-{'on' if on else 'off'}", n, cpu, on)
            for on in (True, False)}
    slow_by = SLOWERS[args.slow_by]
    runs: dict[str, list[float]] = {"none": [], "on": [], "off": []}
    slow_id = ""
    reports: dict[str, dict] = {}
    swarm = Swarm(tmp / "tail-swarm", workers=3)
    try:
        swarm.start_workers()
        slow = swarm.nodes[-1]
        slow_id = slow.id
        for round_ in range(args.repeat):
            for case in runs:
                out = tmp / f"tail-{case}-{round_}"
                if case == "none":
                    wall, report = swarm.submit(jobs[True], out)
                else:
                    with slow_by(slow):
                        wall, report = swarm.submit(jobs[case == "on"], out)
                got = (out / "out.txt").read_text()
                assert got == expected, f"{case}: results differ from i * i"
                runs[case].append(wall)
                reports[case] = report
    finally:
        swarm.close()
    base = min(runs["none"])
    how = ("a SIGSTOP/SIGCONT duty cycle" if args.slow_by == "signals"
           else "a cgroup cpu quota")
    print(f"tail: {n} fragments of {cpu * 1000:.0f} ms of CPU each, chief + 3 one-core "
          f"donors; the slow one at {SHARE:.0%} of a core by {how}; best of {args.repeat}; "
          "results equal i * i")
    line("no slow worker (backups on)", f"{base:.2f} s", "(baseline)")
    for case, label in (("on", "one slow worker, backups on"),
                        ("off", "one slow worker, backups off")):
        wall = min(runs[case])
        note = f"{wall / base:.2f}x"
        if case == "on":
            note += f"; target <= 1.3x: {verdict(wall / base <= 1.3)}"
        line(label, f"{wall:.2f} s", note)
        line("  results by worker (last run; * slow)", ", ".join(
            f"{w[:7]}{'*' if w == slow_id else ''} {v}"
            for w, v in reports[case]["workers"].items()))
    print("  every run (s): " + "; ".join(
        f"{case} " + ", ".join(f"{w:.2f}" for w in walls) for case, walls in runs.items()))


FIGURES: dict[str, Callable[[argparse.Namespace, Path], None]] = {"tail": bench_tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--repeat", type=int, default=2, help="rounds; the best is kept")
    parser.add_argument("--fragments", type=int, default=120, help="tail: fragments")
    parser.add_argument("--cpu", type=float, default=0.1,
                        help="tail: CPU seconds per fragment")
    parser.add_argument("--slow-by", choices=sorted(SLOWERS), default="signals",
                        help="tail: how the slow worker is slowed")
    args = parser.parse_args()
    only = args.only.split(",")
    unknown = [name for name in only if name not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURES)}")
    if args.slow_by == "cgroup" and not cgroup_works():
        parser.error(f"--slow-by cgroup needs a writable cgroup v1 cpu controller at "
                     f"{CGROUP_V1}; use --slow-by signals")
    # Child processes put their working directory first on sys.path: bench/protocol.py
    # must not shadow the protocol package when this runs from bench/.
    os.chdir(ROOT)
    load = os.getloadavg()
    print(f"load average at start: {load[0]:.1f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp_name:
        for name in only:
            FIGURES[name](args, Path(tmp_name))


if __name__ == "__main__":
    main()
