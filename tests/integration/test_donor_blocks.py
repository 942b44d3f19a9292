"""A donor blocks a chief whose jobs keep breaking sandbox rules on it; the submitter sees
why; the owner lifts the block. Real nodes, real sandboxed children, 127.0.0.1 only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import EXAMPLES
from tests.integration.nodes import NodeProcess, make_swarm


def hostile_job(folder: Path) -> Path:
    """Every fragment tries to open a socket (the sandbox's network rule)."""
    folder.mkdir()
    (folder / "Split.py").write_text("def splitter():\n    yield from range(4)\n")
    (folder / "Process.py").write_text(
        "import socket\n"
        "def process(i):\n"
        "    socket.socket().connect(('127.0.0.1', 9))\n"
        "    return i\n"
    )
    (folder / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    return folder


def wait_for(check, what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_repeated_breaches_block_the_chief_until_the_owner_lifts_it(tmp_path: Path) -> None:
    chief_home, donor_home = make_swarm(tmp_path, ["chief", "donor"])
    donor_home.mkdir(exist_ok=True)
    (donor_home / "config.toml").write_text("block_after_breaches = 2\nblock_hours = 5\n")
    chief = NodeProcess(chief_home, "--no-discovery", "--no-donate")
    donor = follower = None
    try:
        donor = NodeProcess(donor_home, "--no-discovery", "--donate", "--cores", "1",
                            "--peer", chief.address)
        chief.wait_for_peers(1, donating=True)
        job = hostile_job(tmp_path / "hostile")
        for attempt in range(2):
            proc = chief.cli("submit", str(job), "-o", str(tmp_path / f"h{attempt}"))
            assert proc.returncode == 1 and "rule: network" in proc.stderr, proc.stderr
        blocked = json.loads(donor.cli("blocked", "--json").stdout)["blocked"]
        assert [b["chief"] for b in blocked] == [chief.id]
        assert "2 of its jobs broke sandbox rules" in blocked[0]["reason"]
        assert "network" in blocked[0]["reason"]

        # The next job, harmless as it is, is refused by the donor: the submitter sees why.
        follower = subprocess.Popen(
            [sys.executable, "-m", "octop2p", "submit", str(EXAMPLES / "primes"), "--home",
             str(chief_home), "-o", str(tmp_path / "primes")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def refused() -> dict:
            jobs = json.loads(chief.cli("status", "--json").stdout)
            return next((j for j in jobs if j["name"] == "primes" and j["refused"]), {})

        job_status = wait_for(refused, "the donor's refusal in the job's status")
        assert job_status["state"] == "running" and job_status["fragments_done"] == 0
        assert "blocks jobs of chief" in job_status["refused"][donor.id]
        human = chief.cli("status", job_status["job"]).stdout  # the table, on stdout
        assert f"refused by {donor.id[:7]}: this node blocks jobs of chief" in human
        assert f"donor {donor.id[:7]} refused job primes" in chief.read_log()
        assert f"blocking chief {chief.id[:7]}" in donor.read_log()

        # The owner lifts the block: the chief offers the job again, and it completes.
        lifted = donor.cli("blocked", "--unblock", chief.id[:7], "--json")
        assert json.loads(lifted.stdout) == {"unblocked": [chief.id]}, lifted.stderr
        out, err = follower.communicate(timeout=90)
        assert follower.returncode == 0, err + chief.read_log()
        assert "refused the job: this node blocks jobs of chief" in err
        assert (tmp_path / "primes" / "count.txt").read_text().strip() == "664579"
        assert json.loads(donor.cli("blocked", "--json").stdout) == {"blocked": []}
        assert donor.cli("blocked", "--unblock", chief.id[:7]).returncode == 2
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        chief.stop()
        if donor is not None:
            donor.stop()
