"""`kill -9` of a chief in mid-job, then a restart with the same home: the job resumes
from its journal and ends with the same bytes as an undisturbed run, without computing
again what the journal kept (docs/jobs.md, "When the chief restarts")."""

from __future__ import annotations

import json
import shutil
import socket
import textwrap
import time
from collections import Counter
from pathlib import Path

import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.api import NodeAPI
from octop2p.net._start import build_node
from tests.integration.nodes import NodeProcess, make_swarm

N = 120
SPLIT = """
import time
def splitter():
    for i in range(N):
        time.sleep(SPLIT_DELAY)
        yield i
"""
PROCESS = """
import time
def process(i):
    time.sleep(PROCESS_DELAY)
    return i * i
"""
# Half a line, a pause, then the rest: a chief killed in the pause leaves results_dir
# half-written, which the checkpoint must undo.
MERGE = """
import time
def merger(result, results_dir):
    with open(results_dir / "merged.txt", "a") as f:
        f.write(f"{result}")
        f.flush()
        if result == SLOW_MERGE:
            (results_dir / "in-merge").write_text("x")
            time.sleep(4)
        f.write("\\n")

def finalize(results_dir):
    (results_dir / "in-merge").unlink(missing_ok=True)
"""


def _package(folder: Path, *, split_delay: float = 0.0, slow_merge: int = -1, n: int = N,
             process_delay: float = 0.03) -> Path:
    folder.mkdir(parents=True)
    (folder / "Split.py").write_text(f"N = {n}\nSPLIT_DELAY = {split_delay}\n" + SPLIT)
    (folder / "Process.py").write_text(f"PROCESS_DELAY = {process_delay}\n" + PROCESS)
    (folder / "Merge.py").write_text(f"SLOW_MERGE = {slow_merge}\n" + MERGE)
    return folder


def _status(node: NodeProcess, job: str) -> dict:
    proc = node.cli("status", job, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _wait(node: NodeProcess, job: str, ready, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(node, job)
        if ready(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"job {job} never got there: {status}\n{node.read_log()}")


def _submit(node: NodeProcess, path: Path) -> str:
    proc = node.cli("submit", str(path), "--no-wait", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["job"]


def _results(node: NodeProcess, job: str, out: Path) -> Path:
    proc = node.cli("fetch", job, "-o", str(out))
    assert proc.returncode == 0, proc.stderr + node.read_log()
    return out


def _fragment_lines(results: Path) -> list[tuple[str, int]]:
    manifest = (results / "manifest.json").read_text()
    return [(f[0], f[1]) for f in json.loads(manifest)["fragments"]]


def _restart(home: Path, *args: str) -> NodeProcess:
    return NodeProcess(home, "--donate", "--cores", "1", "--no-discovery", *args)


def test_chief_killed_in_mid_merge_resumes_with_a_donor(tmp_path: Path) -> None:
    chief_home, donor_home = make_swarm(tmp_path, ["chief", "donor"])
    donor = NodeProcess(donor_home, "--donate", "--cores", "1", "--no-discovery")
    chief = _restart(chief_home, "--peer", donor.address)
    try:
        chief.wait_for_peers(1, donating=True)
        job = _submit(chief, _package(tmp_path / "job", slow_merge=70 * 70))
        marker = next(chief_home.glob("jobs/*/work/results"), None)
        deadline = time.monotonic() + 60
        while not (marker and (marker / "in-merge").exists()):
            assert time.monotonic() < deadline, chief.read_log()
            time.sleep(0.1)
            marker = next(chief_home.glob("jobs/*/work/results"), None)
        time.sleep(1.5)  # the journal is written about once a second
        chief.kill()  # kill -9, the merger in the middle of result 70
        chief = _restart(chief_home, "--peer", donor.address)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"))
        assert status["state"] == "done", (status.get("error"), status)
        # Every result received before the crash was kept (the merger's pause let them
        # all arrive), and none was computed again: the provenance has each once.
        assert status["resumed"] >= 70
        out = _results(chief, job, tmp_path / "out")
    finally:
        chief.stop()
        donor.stop()
    lines = (out / "merged.txt").read_text().splitlines()
    assert lines == [str(i * i) for i in range(N)]  # each once, whole, in order
    seqs = _fragment_lines(out)
    assert sorted(seqs) == [("process", i) for i in range(N)]  # provenance: each once
    assert "resumed: " in chief.read_log()


def test_chief_killed_during_the_split_resumes(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["chief"])
    chief = _restart(home)
    try:
        job = _submit(chief, _package(tmp_path / "job", split_delay=0.05))
        status = _wait(chief, job, lambda s: s["fragments_done"] >= 30)
        assert status["fragments_total"] is None  # the splitter is not done yet
        time.sleep(1.5)  # the journal is written about once a second
        chief.kill()
        chief = _restart(home)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"))
        assert status["state"] == "done", (status.get("error"), status)
        assert status["resumed"] >= 30
        out = _results(chief, job, tmp_path / "out")
    finally:
        chief.stop()
    assert (out / "merged.txt").read_text().splitlines() == [str(i * i) for i in range(N)]
    assert sorted(_fragment_lines(out)) == [("process", i) for i in range(N)]


SCRIPT = """
source = {f"doc{i}": " ".join(f"w{(i * j) % 41}" for j in range(300)) for i in range(40)}

def mapfn(key, value):
    for word in value.split():
        yield word, 1

def reducefn(key, values):
    import time
    time.sleep(0.2)
    return len(values)
"""


def test_chief_killed_during_reduce_resumes_without_mapping_again(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["chief"])
    (tmp_path / "job").mkdir()
    script = tmp_path / "job" / "count.py"
    script.write_text(textwrap.dedent(SCRIPT))
    chief = _restart(home)
    try:
        job = _submit(chief, script)
        _wait(chief, job, lambda s: s["phase"] == "reduce")
        time.sleep(0.3)
        chief.kill()
        chief = _restart(home)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"))
        assert status["state"] == "done", (status.get("error"), status)
        out = _results(chief, job, tmp_path / "out")
    finally:
        chief.stop()
    # The answer, computed here without octop2p.
    words: Counter[str] = Counter()
    for i in range(40):
        words.update(f"w{(i * j) % 41}" for j in range(300))
    lines = (out / "output.txt").read_text().splitlines()
    assert dict(json.loads(line) for line in lines) == dict(words)
    assert len(lines) == len(words)  # each key once
    kinds = Counter(kind for kind, _ in _fragment_lines(out))
    maps = kinds["map"]
    assert maps >= 1 and kinds["reduce"] >= 1
    # Every map task was kept: the resumed chief mapped nothing again.
    assert status["resumed"] >= maps
    assert "resumed: " in chief.read_log()


def test_no_resume_drops_the_job_for_good(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["chief"])
    chief = _restart(home)
    try:
        dropped = _submit(chief, _package(tmp_path / "job", split_delay=0.2))
        _wait(chief, dropped, lambda s: s["fragments_done"] >= 2)
        chief.kill()
        chief = _restart(home, "--no-resume")
        status = _status(chief, dropped)
        assert status["state"] == "failed" and "--no-resume" in status["error"]
        chief.stop()
        # A restart without --no-resume does not take the dropped job up again.
        chief = _restart(home)
        assert _status(chief, dropped)["state"] == "failed"
        assert not list(home.glob(f"jobs/{dropped}*/journal"))
    finally:
        chief.stop()


def test_a_splitter_that_is_not_deterministic_fails_on_resume(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["chief"])
    folder = _package(tmp_path / "job", split_delay=0.02)
    split = folder / "Split.py"
    split.write_text(split.read_text().replace("yield i", "yield i + random.randrange(2)")
                     .replace("import time", "import random, time"))
    chief = _restart(home)
    try:
        job = _submit(chief, folder)
        _wait(chief, job, lambda s: s["fragments_done"] >= 20)
        time.sleep(1.5)
        chief.kill()
        chief = _restart(home)
        status = _wait(chief, job, lambda s: s["state"] in ("done", "failed"))
    finally:
        chief.stop()
    assert status["state"] == "failed"
    assert status["rule"] == "deterministic splitter"
    assert "not deterministic" in status["error"] and "docs/jobs.md" in status["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_job_submitted_with_chief_survives_that_chief_restarting(tmp_path: Path) -> None:
    chief_home, mine = make_swarm(tmp_path, ["chief", "mine"])
    port = _free_port()
    listen = ("--listen", f"127.0.0.1:{port}")
    chief = _restart(chief_home, *listen)
    node = NodeProcess(mine, "--no-discovery", "--peer", chief.address)
    try:
        node.wait_for_peers(1, donating=True)
        proc = node.cli("submit", str(_package(tmp_path / "job", split_delay=0.05)),
                        "--chief", chief.id, "--no-wait", "--json")
        assert proc.returncode == 0, proc.stderr
        job = json.loads(proc.stdout)["job"]
        _wait(chief, job, lambda s: s["fragments_done"] >= 20)
        time.sleep(1.5)
        chief.kill()
        chief = _restart(chief_home, *listen)  # the same port: `mine` redials it
        status = _wait(node, job, lambda s: s["state"] in ("done", "failed"), timeout=90)
        assert status["state"] == "done", (status, node.read_log())
        assert _status(chief, job)["resumed"] >= 20
        out = _results(node, job, tmp_path / "out")
    finally:
        node.stop()
        chief.stop()
    assert (out / "merged.txt").read_text().splitlines() == [str(i * i) for i in range(N)]


def test_the_owner_cancels_a_resumed_job(tmp_path: Path) -> None:
    (home,) = make_swarm(tmp_path, ["chief"])
    chief = _restart(home)
    try:
        job = _submit(chief, _package(tmp_path / "job", split_delay=0.2))
        _wait(chief, job, lambda s: s["fragments_done"] >= 3)
        time.sleep(1.2)
        chief.kill()
        chief = _restart(home)
        _wait(chief, job, lambda s: s["state"] == "running" and s["resumed"] is not None)
        assert chief.cli("cancel", job).returncode == 0
        status = _wait(chief, job, lambda s: s["state"] in ("cancelled", "failed", "done"))
        assert status["state"] == "cancelled", status
        assert not list(home.glob(f"jobs/{job}/journal"))  # nothing left to resume
        chief.stop()
        chief = _restart(home)
        assert _status(chief, job)["state"] == "cancelled"  # and it stays dropped
    finally:
        chief.stop()


async def test_a_wait_as_the_node_starts_follows_the_resumed_job_to_its_end(
        tmp_path: Path) -> None:
    """`submit` that lost its node asks it to `wait` for the job as soon as it is back;
    the job is then still the record read from the store, not yet the resumed job. The
    wait ends when the resumed job does, never with "the job ended running"."""
    (home_path,) = make_swarm(tmp_path, ["chief"])
    first = _restart(home_path)
    try:
        done = _submit(first, _package(tmp_path / "job", n=20))
        _wait(first, done, lambda s: s["state"] == "done")
    finally:
        first.stop()
    # That job's folder as a node killed in mid-job leaves it (no journal yet).
    running = home_path / "jobs" / ("ab" * 16)
    shutil.copytree(home_path / "jobs" / done, running)
    record = json.loads((running / "job.json").read_text())
    (running / "job.json").write_text(json.dumps(record | {"job": "ab" * 16,
                                                           "state": "running"}))
    home = Home(home_path)
    node = build_node(home, Config.load(home), listen_host="127.0.0.1", listen_port=0,
                      discovery=False, donate=True, cores=1)
    api = NodeAPI(node)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        with trio.fail_after(60):
            ended = await api.call("wait", job="ab" * 16)
        nursery.cancel_scope.cancel()
    assert ended["state"] == "done", ended
    assert ended["resumed"] is not None
