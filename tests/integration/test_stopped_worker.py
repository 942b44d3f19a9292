"""A donor frozen with SIGSTOP (node and sandboxed children, as a laptop lid closing
freezes them) for longer than its lease, then thawed with SIGCONT: the chief hands its
fragments to the other donor, the job's results are exact, and nothing is merged twice
(docs/jobs.md, "When things break").

With ``wall_seconds = 1`` a lease lasts 2 x 1 + 10 = 12 s (engine/_machine.py), as long
as a silent link lives (net/_peer.py): the chief either ends the frozen donor's leases
or drops its link first. Both hand its fragments on, and the chief's log says which.
The answer is computed here: fragment i gives i * i, and the merger writes one line per
result it merges, so a result merged twice (or lost) changes the file. Whether the thawed
donor's answer comes before or after the other donor's copy is a race; the chief's
handling of the late one (dropped, said once) is tested in tests/octop2p/test_machine.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_matrix import job, tree

N = 200
FROZEN = 12.0  # seconds without a sign of life: the lease's length, and a link's


def _status(chief: NodeProcess, job_id: str) -> dict:
    proc = chief.cli("status", job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _running_job(chief: NodeProcess, donors: list[str], timeout: float = 60) -> str:
    """The chief's job, once every donor has sent some results."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = json.loads(chief.cli("jobs", "--json").stdout)["jobs"]
        if jobs:
            status = _status(chief, jobs[0]["job"])
            assert status["state"] == "running", status
            if all(status["workers"].get(d) for d in donors):
                return str(status["job"])
        time.sleep(0.1)
    raise AssertionError(f"the donors never both worked\n{chief.read_log()}")


def _handed_on(chief: NodeProcess, worker: str) -> str | None:
    """The chief's log line that took ``worker``'s fragments away, if there is one yet."""
    pattern = (rf"worker {worker} (held fragment \d+ past its lease; it goes to others"
               rf"|left; fragments [\d, ]+(and \d+ more )?go to others)")
    found = re.search(pattern, chief.read_log())
    return found.group(0) if found else None


def test_a_worker_frozen_past_its_lease_loses_its_fragments_and_merges_nothing_twice(
        tmp_path: Path) -> None:
    homes = make_swarm(tmp_path, ["chief", "a", "b"])
    # No backup tasks: the other donor would run the frozen one's fragments as backups
    # once the queue is empty, and the job would not wait for the lease.
    package = job(tmp_path, "squares", "    import time\n    time.sleep(0.1)\n"
                  "    return i * i\n", n=N,
                  toml="backup_tasks = false\n[limits]\nwall_seconds = 1\n")
    nodes: list[NodeProcess] = []
    frozen: NodeProcess | None = None
    submit: subprocess.Popen[str] | None = None
    try:
        chief = NodeProcess(homes[0], "--no-discovery", "--no-donate")
        nodes.append(chief)
        donor = ("--no-discovery", "--donate", "--cores", "1", "--peer", chief.address)
        nodes.append(NodeProcess(homes[1], *donor))
        frozen = NodeProcess(homes[2], *donor)
        nodes.append(frozen)
        chief.wait_for_peers(2, donating=True)
        out = tmp_path / "out"
        submit = subprocess.Popen(
            [sys.executable, "-m", "octop2p", "submit", str(package), "-o", str(out),
             "--home", str(chief.home)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        job_id = _running_job(chief, [nodes[1].id, frozen.id])
        frozen.signal_all(signal.SIGSTOP)
        stopped = time.monotonic()
        before = _status(chief, job_id)
        while not (line := _handed_on(chief, frozen.id)):
            assert time.monotonic() - stopped < FROZEN + 8, chief.read_log()
            time.sleep(0.05)
        held = time.monotonic() - stopped
        frozen.signal_all(signal.SIGCONT)
        _, err = submit.communicate(timeout=60)
        assert submit.returncode == 0, err + chief.read_log()
        status = _status(chief, job_id)
        log = chief.read_log()
    finally:
        if submit is not None and submit.poll() is None:
            submit.kill()
            submit.wait()
        if frozen is not None and frozen.proc.poll() is None:
            frozen.signal_all(signal.SIGCONT)
        for node in nodes:
            node.stop()
    # Not before the lease (or the link's silence) ran out: a pause is not a loss.
    assert held >= FROZEN - 0.5, (held, line)
    expected = "".join(f"{i * i}\n" for i in range(N)).encode()
    assert tree(out) == {"out.txt": expected}, log
    assert status["fragments_done"] == N
    # Each fragment counted once: a late result is no second vote.
    assert sum(status["workers"].values()) == N, status
    # Results that came in after their fragment was merged were dropped, and said so.
    late = re.findall(rf"worker {frozen.id}'s late result for fragment (\d+) was dropped",
                      log)
    assert len(late) == len(set(late)), log
    if f"worker {frozen.id} left" not in log:
        # The lease ran out first and the link held: thawed, the donor worked on.
        assert "past its lease" in line
        assert status["workers"][frozen.id] > before["workers"][frozen.id], (before, status)
