"""`kill -9` of a chief whose only donor is in mid-fragment: the donor keeps that work,
and when the chief restarts with the same home, it hands the results in and the resumed
job adopts them instead of computing them again (docs/jobs.md, "When the chief
restarts")."""

from __future__ import annotations

import json
import re
import textwrap
import time
from collections import Counter
from pathlib import Path

from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_resume import (
    SCRIPT,
    _fragment_lines,
    _package,
    _results,
    _submit,
    _wait,
)

N = 24  # fragments of half a second each, on a donor of one core


def _chief(home: Path, donor: NodeProcess) -> NodeProcess:
    # Not donating: every fragment runs on the donor.
    return NodeProcess(home, "--no-discovery", "--peer", donor.address)


def _kill_in_mid_job(tmp_path: Path, done: int, donor_config: str = ""
                     ) -> tuple[Path, NodeProcess, NodeProcess, str]:
    """A chief and its donor; the chief is killed once ``done`` fragments are merged.
    Returns the chief's home, the killed chief, the donor and the job's id."""
    chief_home, donor_home = make_swarm(tmp_path, ["chief", "donor"])
    (donor_home / "config.toml").write_text(donor_config)
    donor = NodeProcess(donor_home, "--donate", "--cores", "1", "--no-discovery")
    chief = _chief(chief_home, donor)
    try:
        chief.wait_for_peers(1, donating=True)
        job = _submit(chief, _package(tmp_path / "job", n=N, process_delay=0.5))
        _wait(chief, job, lambda s: s["fragments_done"] >= done)
    except BaseException:
        donor.stop()
        raise
    finally:
        chief.kill()  # kill -9 while the donor runs the next fragments
    return chief_home, chief, donor, job


def _runs_on_donor(donor: NodeProcess, timeout: float = 10) -> int:
    """Fragments the donor ran for the job, once it stopped working on it."""
    pattern = re.compile(r"stopped working on job .*: (\d+) fragments run here")
    deadline = time.monotonic() + timeout
    while not (found := pattern.findall(donor.read_log())):
        assert time.monotonic() < deadline, donor.read_log()
        time.sleep(0.2)
    return sum(map(int, found))


def test_a_donor_hands_in_its_work_to_a_restarted_chief(tmp_path: Path) -> None:
    chief_home, chief, donor, job = _kill_in_mid_job(tmp_path, 6)
    try:
        chief = _chief(chief_home, donor)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"), timeout=60)
        assert status["state"] == "done", (status.get("error"), status)
        out = _results(chief, job, tmp_path / "out")
        ran = _runs_on_donor(donor)
        chief_log, donor_log = chief.read_log(), donor.read_log()
    finally:
        chief.stop()
        donor.stop()
    # The answer, computed here: each result once, whole, in order.
    assert (out / "merged.txt").read_text().splitlines() == [str(i * i) for i in range(N)]
    fragments = json.loads((out / "manifest.json").read_text())["fragments"]
    assert sorted(_fragment_lines(out)) == [("process", i) for i in range(N)]
    assert {tuple(f[3]) for f in fragments} == {(donor.id,)}  # the donor did all the work
    assert "lost chief" in donor_log and "is back: handing in" in donor_log, donor_log
    adopted = [int(n) for n in re.findall(r"handover: adopted (\d+) results", chief_log)]
    assert adopted and adopted[-1] > 0, chief_log
    # `status` counts them with what the journal kept, as work not done again.
    kept = int(re.findall(r"resumed: (\d+) results kept", chief_log)[0])
    assert status["resumed"] == kept + adopted[-1]
    # Nothing ran twice on the donor: what it held was adopted, not computed again.
    assert ran == N, (ran, donor_log)


def test_a_donor_drops_the_work_of_a_chief_that_does_not_come_back(tmp_path: Path) -> None:
    _, chief, donor, _ = _kill_in_mid_job(tmp_path, 2, "handover_seconds = 2\n")
    try:
        _runs_on_donor(donor)  # it stopped working on the job...
        donor_log = donor.read_log()
    finally:
        chief.stop()
        donor.stop()
    # ... after holding it for handover_seconds, and said why in one line.
    assert "lost chief" in donor_log
    assert len(re.findall(r"did not come back within 2 s \(handover_seconds\): dropping "
                          r"\d+ results and \d+ running fragments", donor_log)) == 1, donor_log


def test_a_mapreduce_job_adopts_the_reduce_a_donor_ran_while_its_chief_was_down(
        tmp_path: Path) -> None:
    chief_home, donor_home = make_swarm(tmp_path, ["chief", "donor"])
    donor = NodeProcess(donor_home, "--donate", "--cores", "1", "--no-discovery")
    chief = _chief(chief_home, donor)
    (tmp_path / "job").mkdir()
    script = tmp_path / "job" / "count.py"
    script.write_text(textwrap.dedent(SCRIPT))
    try:
        chief.wait_for_peers(1, donating=True)
        job = _submit(chief, script)
        _wait(chief, job, lambda s: s["phase"] == "reduce")
        time.sleep(0.5)  # the donor is in mid-reduce (0.2 s a key)
        chief.kill()
        chief = _chief(chief_home, donor)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"))
        assert status["state"] == "done", (status.get("error"), status)
        out = _results(chief, job, tmp_path / "out")
        chief_log = chief.read_log()
    finally:
        chief.stop()
        donor.stop()
    words: Counter[str] = Counter()  # the answer, computed here
    for i in range(40):
        words.update(f"w{(i * j) % 41}" for j in range(300))
    lines = (out / "output.txt").read_text().splitlines()
    assert dict(json.loads(line) for line in lines) == dict(words)
    assert len(lines) == len(words)  # each key once
    held = re.findall(r"handover: adopted (\d+) results and (\d+) running", chief_log)
    assert held and sum(map(int, held[-1])) > 0, chief_log  # the donor's work was taken
