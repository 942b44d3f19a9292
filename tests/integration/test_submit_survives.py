"""`octop2p submit` against a node daemon (`octop2p node` in a home) outlives what can
happen to either side (docs/jobs.md, "When things break"): `kill -9` of the submit, then
`octop2p fetch` with the id it printed; `kill -9` of the node, then a restart in the same
home, which the submit waits for (reattach_seconds) and follows to the job's end: the
resumed job's results, or (`node --no-resume`) its failure.

The answer is computed here, not by octop2p: fragment i squares i, and the merger writes
one line per result in fragment order."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_matrix import job, tree

N = 30
DAEMON = ("--no-discovery", "--donate", "--cores", "1")


def _expected() -> dict[str, bytes]:
    return {"out.txt": "".join(f"{i * i}\n" for i in range(N)).encode()}


def _slow_job(tmp: Path) -> Path:
    """30 fragments of 0.3 s each: about 10 s on the node's one core."""
    return job(tmp, "slow", "    import time\n    time.sleep(0.3)\n    return i * i\n", n=N)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[NodeProcess]:
    (home,) = make_swarm(tmp_path, ["a"])
    node = NodeProcess(home, *DAEMON)
    try:
        yield node
    finally:
        node.stop()


def _submit(node: NodeProcess, package: Path, out: Path,
            log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "octop2p", "submit", str(package), "-o", str(out),
             "--home", str(node.home)],
            stdout=subprocess.DEVNULL, stderr=err)


def _printed_id(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """The job id as a user learns it: from submit's "submitted ... as job ID" line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"submitted \S+ as job (\w+) to the local node", log.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"submit printed no job id: {log.read_text()}")


def _status(node: NodeProcess, job_id: str) -> dict:
    proc = node.cli("status", job_id, "--json")
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def _wait_some_done(node: NodeProcess, job_id: str, timeout: float = 60) -> None:
    """Until some fragments of the job are done, and not all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(node, job_id)
        assert status["state"] not in ("done", "failed"), status
        if status["fragments_done"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"no fragment of {job_id} done\n{node.read_log()}")


def test_kill_9_of_submit_then_fetch_by_the_printed_id(daemon: NodeProcess,
                                                        tmp_path: Path) -> None:
    out, log = tmp_path / "out", tmp_path / "submit.err"
    proc = _submit(daemon, _slow_job(tmp_path), out, log)
    try:
        job_id = _printed_id(log, proc)
        _wait_some_done(daemon, job_id)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    # The job lives in the node: it runs on to its end without the submit.
    deadline = time.monotonic() + 60
    while (state := _status(daemon, job_id)["state"]) != "done":
        assert state == "running" and time.monotonic() < deadline, daemon.read_log()
        time.sleep(0.3)
    fetched = daemon.cli("fetch", job_id, "-o", str(out))
    assert fetched.returncode == 0, fetched.stderr
    assert tree(out) == _expected()


def _kill_node_under_submit(tmp: Path, reattach: int) -> tuple[Path, str, str,
                                                                 subprocess.Popen[bytes]]:
    """A node (``reattach_seconds = reattach``) killed with -9 in mid-job while a submit
    follows the job: its home, its id, the job's id and the submit, still running."""
    (home,) = make_swarm(tmp, ["a"])
    (home / "config.toml").write_text(f"reattach_seconds = {reattach}\n")
    node = NodeProcess(home, *DAEMON)
    proc = _submit(node, _slow_job(tmp), tmp / "out", tmp / "submit.err")
    try:
        job_id = _printed_id(tmp / "submit.err", proc)
        _wait_some_done(node, job_id)
    except BaseException:
        proc.kill()
        raise
    finally:
        node.kill()  # kill -9: the control socket closes under the submit's `wait`
        node.stop()
    return home, node.id, job_id, proc


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "no-resume"])
def test_submit_waits_for_its_node_to_come_back_and_ends_with_the_jobs_state(
        tmp_path: Path, resume: bool) -> None:
    home, node_id, job_id, proc = _kill_node_under_submit(tmp_path, 40)
    out, log = tmp_path / "out", tmp_path / "submit.err"
    again: NodeProcess | None = None
    try:
        lost = (f"lost the node {node_id[:7]} (its control socket closed); waiting up to "
                "40 s for it to come back (reattach_seconds)")
        deadline = time.monotonic() + 15
        while lost not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(2)  # the submit keeps trying the dead socket meanwhile
        assert proc.poll() is None, log.read_text()
        again = NodeProcess(home, *DAEMON, *(() if resume else ("--no-resume",)))
        code = proc.wait(timeout=60)
        ended = _status(again, job_id)
    finally:
        if proc.poll() is None:
            proc.kill()
        if again is not None:
            again.stop()
    said = log.read_text()
    assert said.count("lost the node") == 1, said
    assert f"node {node_id[:7]} is back; following job {job_id} again" in said, said
    if resume:  # the node resumed the job, and the submit delivers its results
        assert ended["state"] == "done", (ended.get("error"), ended, code, said)
        assert code == 0, said
        assert tree(out) == _expected()
    else:  # the node dropped it: failed, "interrupted"
        assert ended["state"] == "failed" and ended["error"].startswith("interrupted"), ended
        assert code == 1, said  # README.md: 1, the job failed
        last = said.strip().splitlines()[-1]
        assert "interrupted" in last, said
        assert not out.exists()


def test_submit_gives_up_on_a_node_that_stays_down_naming_the_setting(
        tmp_path: Path) -> None:
    _, _, job_id, proc = _kill_node_under_submit(tmp_path, 3)
    out, log = tmp_path / "out", tmp_path / "submit.err"
    started = time.monotonic()
    try:
        code = proc.wait(timeout=30)
        waited = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    said = log.read_text()
    assert code == 69, said  # README.md: 69, no node reachable
    assert 3 <= waited < 20, (waited, said)
    assert "waiting up to 3 s for it to come back (reattach_seconds)" in said, said
    assert "did not come back within 3 s (reattach_seconds in config.toml)" in said, said
    assert f"`octop2p fetch {job_id}`" in said, said
    assert not out.exists()
