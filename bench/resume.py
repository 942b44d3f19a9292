"""What faults cost a job: the chief's journal, a chief's crash, and the tail.

    nice python bench/resume.py [--only journal,crash,tail] [--repeat 2]
                                [--slow-by signals|cgroup]

- **journal**: the same jobs (20,000 no-op fragments, then the 20 MB wordcount of
  `bench/wordcount.py`) through two chiefs sharing two one-core donors, one with the
  journal and one with `journal = false`, alternated; the ratio of wall times, from
  `octop2p submit` to its results (goal: at most 1.05x).
- **crash**: a job of 400 sleeping fragments on a journaled chief with two donors,
  undisturbed, and with the chief killed (-9) once half its fragments are merged and
  restarted at once; every run's results checked. Prints the time lost.
- **tail**: a chief (not donating) and three donor nodes of one core each on 127.0.0.1,
  as `bench/network.py` starts them; a CPU-bound job (every fragment burns the same CPU
  time, then returns i * i) on three donors, against the same job when one donor is
  slowed to about 5% of a core: with backup tasks on (`backup_tasks = true`, the
  default) and off. `--slow-by signals` (the default) slows it with a SIGSTOP/SIGCONT
  duty cycle on its processes (node and sandboxed children: 5 ms running in every 100
  ms); `--slow-by cgroup` puts them in a cgroup v1 `cpu` group with a quota of 5 ms per
  100 ms, where the machine lets us. Target: at most 1.3x the job with no slow worker,
  with backups on. The rounds alternate, the best of `--repeat` is kept, and every run's
  results are checked byte for byte against the answer computed here.

Each figure is one function taking the parsed arguments and a scratch folder; `FIGURES`
maps `--only`'s names to them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from _common import ROOT
from network import Swarm, line, verdict
from overhead import make_job as make_noop_job
from wordcount import make_corpus

sys.path.insert(0, str(ROOT))
from tests.integration.nodes import NodeProcess, make_swarm  # noqa: E402 - after the path

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


# --- the journal's cost, and a chief's crash at 50% -----------------------------------

SLEEP_JOB = 400  # fragments of SLEEP_SECONDS each, for the crash figure
SLEEP_SECONDS = 0.02


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoChiefs:
    """Two chiefs (not donating), one with the journal and one with `journal = false`,
    sharing two donating one-core workers: the same jobs alternate between them."""

    def __init__(self, root: Path) -> None:
        homes = make_swarm(root, ["on", "off", "w1", "w2"])
        (homes[1] / "config.toml").write_text("journal = false\n")
        self.port = _free_port()
        self.on_home = homes[0]
        self.on = NodeProcess(homes[0], "--no-discovery", "--no-donate",
                              "--listen", f"127.0.0.1:{self.port}")
        self.off = NodeProcess(homes[1], "--no-discovery", "--no-donate")
        self.workers = [
            NodeProcess(home, "--no-discovery", "--donate", "--cores", "1",
                        "--peer", self.on.address, "--peer", self.off.address)
            for home in homes[2:]
        ]
        for chief in (self.on, self.off):
            chief.wait_for_peers(2, donating=True, timeout=30)

    def submit(self, chief: NodeProcess, job: Path, out: Path) -> float:
        started = time.perf_counter()
        proc = chief.cli("submit", str(job), "--json", "-o", str(out), timeout=1800)
        if proc.returncode != 0:
            sys.exit(f"submit failed: {proc.stderr}\n{chief.read_log()[-3000:]}")
        return time.perf_counter() - started

    def restart_on(self) -> None:
        self.on.kill()
        self.on = NodeProcess(self.on_home, "--no-discovery", "--no-donate",
                              "--listen", f"127.0.0.1:{self.port}")

    def close(self) -> None:
        for node in [*self.workers, self.on, self.off]:
            node.stop()


def _status(chief: NodeProcess, job: str) -> dict:
    proc = chief.cli("status", job, "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


def bench_journal(args: argparse.Namespace, tmp: Path) -> None:
    """Wall time of the same jobs with the journal on and off (goal: at most 1.05x)."""
    rounds = max(2, args.repeat)
    swarm = TwoChiefs(tmp / "swarm")
    try:
        noop = make_noop_job(tmp, 20_000)
        corpus = tmp / "wc"
        corpus.mkdir()
        make_corpus(corpus, files=200, kb=100)
        for label, job in (("20,000 no-op fragments", noop),
                           ("wordcount, 20 MB", corpus / "wordcount_bench.py")):
            on, off = [], []
            for r in range(rounds):  # alternated, each first in turn
                order = [("on", swarm.on), ("off", swarm.off)]
                for name, chief in order if r % 2 == 0 else order[::-1]:
                    wall = swarm.submit(chief, job, tmp / f"out-{name}-{r}-{len(on)}")
                    (on if name == "on" else off).append(wall)
            ratios = sorted(a / b for a, b in zip(on, off, strict=True))
            print(f"journal cost, {label} ({rounds} alternated rounds, chief + 2 donors):")
            print(f"  journal on   {min(on):7.2f} s best, {statistics.median(on):.2f} s median")
            print(f"  journal off  {min(off):7.2f} s best, {statistics.median(off):.2f} s median")
            print(f"  on / off: best {min(on) / min(off):.3f}x, per round "
                  f"{ratios[0]:.3f}-{ratios[-1]:.3f}x (median "
                  f"{statistics.median(ratios):.3f}x); goal <= 1.05x")
    finally:
        swarm.close()


def _sleep_job(root: Path) -> Path:
    job = root / "sleepy"
    job.mkdir()
    (job / "Split.py").write_text(f"def splitter():\n    yield from range({SLEEP_JOB})\n")
    (job / "Process.py").write_text(
        f"import time\ndef process(i):\n    time.sleep({SLEEP_SECONDS})\n    return i * i\n")
    (job / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'out.txt', 'a') as f:\n"
        "        f.write(f'{result}\\n')\n")
    return job


def _run_to_end(swarm: TwoChiefs, job: Path, *, crash_at: float | None) -> tuple[float, int]:
    """Seconds from submit to done on the journaled chief; with ``crash_at``, it is
    killed (-9) once that share of fragments is merged, and restarted at once."""
    started = time.perf_counter()
    proc = swarm.on.cli("submit", str(job), "--no-wait", "--json")
    job_id = json.loads(proc.stdout)["job"]
    kept = 0
    crashed = crash_at is None
    while True:
        status = _status(swarm.on, job_id)
        if not crashed and status.get("fragments_done", 0) >= crash_at * SLEEP_JOB:
            swarm.restart_on()
            crashed = True
            continue
        if status.get("state") in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    if status["state"] != "done":
        sys.exit(f"the job ended {status['state']}: {status.get('error')}")
    out = job.parent / f"crash-out-{crash_at}"
    fetched = swarm.on.cli("fetch", job_id, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    lines = (out / "out.txt").read_text().split()
    assert lines == [str(i * i) for i in range(SLEEP_JOB)], "resumed results differ"
    kept = status.get("resumed") or 0
    return wall, kept


def bench_crash(args: argparse.Namespace, tmp: Path) -> None:
    """Time lost by a chief's kill -9 at 50% of a job, against the job undisturbed."""
    rounds = args.repeat
    swarm = TwoChiefs(tmp / "swarm-crash")
    try:
        job = _sleep_job(tmp)
        calm, crashed, kept = [], [], []
        for _ in range(rounds):
            calm.append(_run_to_end(swarm, job, crash_at=None)[0])
            wall, k = _run_to_end(swarm, job, crash_at=0.5)
            crashed.append(wall)
            kept.append(k)
        print(f"a chief killed at 50% ({SLEEP_JOB} fragments of {SLEEP_SECONDS * 1000:.0f} ms, "
              f"2 one-core donors, {rounds} alternated rounds; results checked):")
        print(f"  undisturbed        {statistics.median(calm):6.2f} s median")
        print(f"  killed at 50%      {statistics.median(crashed):6.2f} s median "
              f"(restart included), {statistics.median(kept):.0f} results kept")
        lost = statistics.median(crashed) - statistics.median(calm)
        print(f"  time lost          {lost:6.2f} s, "
              f"{statistics.median(crashed) / statistics.median(calm):.2f}x undisturbed")
    finally:
        swarm.close()


FIGURES: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "journal": bench_journal, "crash": bench_crash, "tail": bench_tail}


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
