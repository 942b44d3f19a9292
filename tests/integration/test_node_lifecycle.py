"""A node stops cleanly: SIGTERM or Ctrl-C, nothing left running, peers see it go."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_run_errors import _alive, _descendants


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_node_stops_cleanly(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    homes = make_swarm(tmp_path, ["a", "b"])
    a = NodeProcess(homes[0], "--donate", "--cores", "1")  # mDNS on loopback too
    b = NodeProcess(homes[1], "--no-discovery", "--peer", a.address)
    try:
        b.wait_for_peers(1)
        children = _descendants(a.proc.pid)
        assert children, "the node runs a sandbox fork server"
        a.proc.send_signal(sig)
        assert a.proc.wait(timeout=15) == code
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in children if _alive(p)], "left running after the node stopped"
        assert not (homes[0] / "control.sock").exists()
        # The peer noticed at once (the link closed), not after a heartbeat timeout.
        deadline = time.monotonic() + 5
        while b.peers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p for p in b.peers() if p["trusted"]] == []
    finally:
        a.stop()
        b.stop()


def test_second_node_in_the_same_home_is_refused(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["a"])
    a = NodeProcess(home, "--no-discovery")
    try:
        with pytest.raises(RuntimeError, match="another octop2p node"):
            NodeProcess(home, "--no-discovery")
        assert json.loads(a.cli("id", "--json").stdout)["id"] == a.id
    finally:
        a.stop()


def test_jobs_and_results_outlive_a_restart(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    (home,) = make_swarm(tmp_path, ["a"])
    a = NodeProcess(home, "--no-discovery", "--donate", "--cores", "1")
    try:
        proc = a.cli(
            "submit", str(EXAMPLES / "montecarlo_pi"), "--json", "-o", str(tmp_path / "first")
        )
        assert proc.returncode == 0, proc.stderr
        job_id = json.loads(proc.stdout.splitlines()[-1])["job"]
    finally:
        a.stop()
    journal = json.loads((home / "jobs" / job_id / "job.json").read_text())
    assert journal["state"] == "done" and journal["done"] == 50
    assert (home / "jobs" / job_id / "package.tar").exists()
    assert not (home / "jobs" / job_id / "work").exists()  # scratch space is gone

    again = NodeProcess(home, "--no-discovery")
    try:
        jobs = json.loads(again.cli("jobs", "--json").stdout)["jobs"]
        assert [(j["job"], j["state"], j["fragments_done"]) for j in jobs] == [(job_id, "done", 50)]
        fetched = again.cli("fetch", job_id[:8], "-o", str(tmp_path / "again"))
        assert fetched.returncode == 0, fetched.stderr
        assert (tmp_path / "again" / "pi.txt").read_text() == (
            tmp_path / "first" / "pi.txt"
        ).read_text()
    finally:
        again.stop()
