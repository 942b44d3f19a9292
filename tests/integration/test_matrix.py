"""The same jobs three ways, compared byte for byte: `octop2p run`, a chief with donors
(`submit` on the chief), and `submit --chief` from another member.

One swarm of real node processes on 127.0.0.1 serves the whole module: a chief that
donates one core, two donors of one core each (three distinct voters), and a member that
does not donate and submits with `--chief`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from octop2p.net._control import ControlClient
from tests.conftest import EXAMPLES, run_cli
from tests.integration.nodes import NodeProcess, make_swarm

WAYS = ("run", "chief", "--chief")


class Swarm:
    def __init__(self, chief: NodeProcess, donors: list[NodeProcess], member: NodeProcess):
        self.chief, self.donors, self.member = chief, donors, member

    def submit(self, way: str, job: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
        if way == "run":
            return run_cli("run", job, "-w", "3", "-o", out, *extra, timeout=300)
        if way == "chief":
            return self.chief.cli("submit", str(job), "-o", str(out), *extra, timeout=300)
        return self.member.cli("submit", str(job), "--chief", self.chief.id, "-o", str(out),
                               *extra, timeout=300)

    def logs(self) -> str:
        return "\n".join(n.read_log()[-3000:] for n in (self.chief, *self.donors, self.member))


@pytest.fixture(scope="module")
def swarm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swarm]:
    tmp = tmp_path_factory.mktemp("matrix")
    homes = make_swarm(tmp, ["chief", "d1", "d2", "member"])
    nodes: list[NodeProcess] = []
    try:
        chief = NodeProcess(homes[0], "--no-discovery", "--donate", "--cores", "1")
        nodes.append(chief)
        for home in homes[1:3]:
            nodes.append(NodeProcess(home, "--no-discovery", "--donate", "--cores", "1",
                                     "--peer", chief.address))
        member = NodeProcess(homes[3], "--no-discovery", "--no-donate", "--peer", chief.address)
        nodes.append(member)
        chief.wait_for_peers(2, donating=True)
        member.wait_for_peers(1, donating=True)
        yield Swarm(chief, nodes[1:3], member)
    finally:
        for node in nodes:
            node.stop()


async def _running(home: Path) -> list:
    """What runs on a node for others now, from its control socket."""
    client = await ControlClient.connect(home / "control.sock")
    return await client.call("running")


def tree(out: Path) -> dict[str, bytes]:
    """Every results file (the delivery marker and the signed manifest aside: they name
    the job, its chief and its workers), by relative path."""
    assert (out / "manifest.json").is_file()
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".octop2p") and p.name != "manifest.json"}


def job(tmp: Path, name: str, process: str, merge: str = "", n: int = 40,
        toml: str = "") -> Path:
    """A small package: fragments 0..n-1, a process() body, and ``merge`` (Merge.py's
    text) or a merger writing each result to out.txt."""
    folder = tmp / name
    folder.mkdir()
    (folder / "Split.py").write_text(
        f"def splitter():\n    for i in range({n}):\n        yield i\n")
    (folder / "Process.py").write_text(f"def process(i):\n{process}")
    (folder / "Merge.py").write_text(merge or (
        "def merger(result, results_dir):\n"
        "    with open(results_dir / 'out.txt', 'a') as f:\n"
        "        f.write(repr(result) + '\\n')\n"))
    (folder / "job.toml").write_text(toml)
    return folder


@pytest.mark.parametrize("example", ["primes", "mandelbrot", "montecarlo_pi", "wordcount.py",
                                     "wordcount_lazy.py"])
def test_every_example_gives_the_same_bytes_three_ways(swarm: Swarm, tmp_path: Path,
                                                       example: str) -> None:
    results = {}
    for way in WAYS:
        out = tmp_path / way
        proc = swarm.submit(way, EXAMPLES / example, out)
        assert proc.returncode == 0, f"{way}: {proc.stderr}\n{swarm.logs()}"
        results[way] = (tree(out), proc.stdout)
    assert results["run"][0], "the job produced no results"
    assert results["chief"] == results["run"]
    assert results["--chief"] == results["run"]


@pytest.mark.parametrize("redundancy", [1, 2, 3])
def test_redundancy_gives_the_same_bytes_three_ways(swarm: Swarm, tmp_path: Path,
                                                    redundancy: int) -> None:
    pkg = job(tmp_path, f"r{redundancy}", "    return (i * i, str(i) * 3)\n",
              toml=f"redundancy = {redundancy}\n")
    expected = "".join(repr((i * i, str(i) * 3)) + "\n" for i in range(40))
    reports = {}
    for way in WAYS:
        out = tmp_path / f"out-{way}"
        proc = swarm.submit(way, pkg, out, "--json")
        assert proc.returncode == 0, f"{way}: {proc.stderr}\n{swarm.logs()}"
        assert (out / "out.txt").read_text() == expected, way
        reports[way] = json.loads(proc.stdout.strip().splitlines()[-1])
    if redundancy > 1:
        # On the chief, the copies of each fragment came from distinct nodes.
        report = reports["chief"]
        assert len(report["workers"]) >= redundancy, report
        assert sum(report["workers"].values()) == 40 * redundancy


def test_a_failing_process_fails_the_same_way_three_ways(swarm: Swarm, tmp_path: Path) -> None:
    pkg = job(tmp_path, "oops", "    if i == 7:\n        raise ValueError(f'bad {i}')\n"
              "    return i\n")
    errors = {}
    for way in WAYS:
        proc = swarm.submit(way, pkg, tmp_path / f"out-{way}")
        assert proc.returncode == 1, f"{way}: {proc.stderr}"
        assert "ValueError: bad 7" in proc.stderr, way
        errors[way] = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors["run"] and all("Process.py:3" in e[-1] for e in errors.values()), errors


def test_a_failing_merger_then_a_healthy_job_keeps_the_links_sound(swarm: Swarm,
                                                                   tmp_path: Path) -> None:
    """A job that fails mid-stream (many fragments in flight on the wire) must not cut a
    record in two: the next job runs on the same links, and no link was dropped."""
    bad = job(tmp_path, "badmerge", "    return b'x' * 2000\n", n=2000, merge=(
        "count = 0\n"
        "def merger(result, results_dir):\n"
        "    global count\n"
        "    count += 1\n"
        "    if count == 300:\n"
        "        raise RuntimeError('merger gives up at 300')\n"))
    good = job(tmp_path, "good", "    return i + 1\n", n=200)
    for way in ("--chief", "chief"):
        failed = swarm.submit(way, bad, tmp_path / f"bad-{way}")
        assert failed.returncode == 1 and "merger gives up at 300" in failed.stderr, way
        ok = swarm.submit(way, good, tmp_path / f"good-{way}", "--json")
        assert ok.returncode == 0, ok.stderr
        report = json.loads(ok.stdout.strip().splitlines()[-1])  # the chief's, at the end
        assert (tmp_path / f"good-{way}" / "out.txt").read_text() == "".join(
            f"{i + 1}\n" for i in range(200))
    logs = swarm.logs()
    assert "failed to decrypt" not in logs
    assert "silent for" not in logs
    # The donors still work for the chief: the last job used them.
    assert {d.id for d in swarm.donors} <= set(report["workers"]), report


def test_cancel_stops_the_job_and_its_donors(swarm: Swarm, tmp_path: Path) -> None:
    pkg = job(tmp_path, "slow", "    import time\n    time.sleep(0.5)\n    return i\n", n=200)
    for way in ("chief", "--chief"):
        node = swarm.chief if way == "chief" else swarm.member
        extra = () if way == "chief" else ("--chief", swarm.chief.id)
        started = node.cli("submit", str(pkg), "--no-wait", "--json", *extra)
        assert started.returncode == 0, started.stderr
        job_id = json.loads(started.stdout.strip().splitlines()[-1])["job"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(swarm.chief.cli("status", "--json").stdout)
            mine = [s for s in status if s["job"] == job_id]
            if mine and mine[0]["fragments_done"] >= 2:
                break
            time.sleep(0.3)
        cancelled = node.cli("cancel", job_id, "--json")
        assert cancelled.returncode == 0, cancelled.stderr
        waited = node.cli("status", job_id, "--json")
        deadline = time.monotonic() + 30
        while json.loads(waited.stdout)["state"] != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.3)
            waited = node.cli("status", job_id, "--json")
        assert json.loads(waited.stdout)["state"] == "cancelled", waited.stdout
        # Every donor stops the job's children within a few seconds.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            running = [trio.run(_running, d.home) for d in swarm.donors]
            if not any(r for r in running):
                break
            time.sleep(0.3)
        assert not any(running), running


def test_thirty_concurrent_submits_all_deliver(swarm: Swarm, tmp_path: Path) -> None:
    pkg = job(tmp_path, "tiny", "    return i * 2\n", n=5)
    procs = [
        subprocess.Popen([sys.executable, "-m", "octop2p", "submit", str(pkg), "--json",
                          "-o", str(tmp_path / f"o{k}"), "--home", str(swarm.chief.home)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(30)
    ]
    ids = set()
    for k, proc in enumerate(procs):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        ids.add(json.loads(out.strip().splitlines()[-1])["job"])
        assert (tmp_path / f"o{k}" / "out.txt").read_text() == "0\n2\n4\n6\n8\n"
    assert len(ids) == 30
