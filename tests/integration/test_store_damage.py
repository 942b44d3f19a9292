"""Nothing half-written, nothing lost (docs/jobs.md, "When things break"): damaged job
records and results in a node's store, an interrupted job's scratch folder, and full
disks under the chief's home and under `-o` (a small tmpfs, where the test may mount one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.nodes import NodeProcess, make_swarm
from tests.integration.test_matrix import job, tree

#: A merger writing 256 KiB that gzip cannot shrink (a hash chain: same bytes each run).
BIG_MERGE = (
    "import hashlib\n"
    "def merger(result, results_dir):\n"
    "    with open(results_dir / 'out.txt', 'a') as f:\n"
    "        f.write(repr(result) + '\\n')\n"
    "def finalize(results_dir):\n"
    "    h, chunks = b'seed', []\n"
    "    for _ in range(8192):\n"
    "        h = hashlib.sha256(h).digest()\n"
    "        chunks.append(h)\n"
    "    (results_dir / 'big.bin').write_bytes(b''.join(chunks))\n"
)


def _node(home: Path) -> NodeProcess:
    return NodeProcess(home, "--no-discovery", "--donate", "--cores", "1")


def _submit(node: NodeProcess, package: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return node.cli("submit", str(package), *args)


def _jobs(node: NodeProcess) -> list[dict]:
    proc = node.cli("jobs", "--json")
    assert proc.returncode == 0, proc.stderr + node.read_log()
    return json.loads(proc.stdout)["jobs"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return make_swarm(tmp_path, ["chief"])[0]


def test_damaged_records_are_listed_and_their_intact_results_fetched(
    home: Path, tmp_path: Path
) -> None:
    package = job(tmp_path, "small", "    return i * 3\n", n=6)
    node = _node(home)
    try:
        ids = []
        for n in range(4):
            proc = _submit(node, package, "-o", str(tmp_path / f"out{n}"), "--json")
            assert proc.returncode == 0, proc.stderr
            ids.append(json.loads(proc.stdout.splitlines()[-1])["job"])
    finally:
        node.stop()
    unparseable, wrong_type, corrupt, whole = (home / "jobs" / i for i in ids)
    (unparseable / "job.json").write_text('{"job": "')
    record = json.loads((wrong_type / "job.json").read_text())
    record["workers"] = "not a map"  # once broke `jobs` and `status` for every job
    (wrong_type / "job.json").write_text(json.dumps(record))
    results = bytearray((corrupt / "results.tar.gz").read_bytes())
    results[len(results) // 2] ^= 0xFF
    (corrupt / "results.tar.gz").write_bytes(bytes(results))
    # A job that was running when its node died: taken up again at the next start.
    running = home / "jobs" / ("ab" * 16)
    shutil.copytree(whole, running)
    record = json.loads((whole / "job.json").read_text())
    (running / "job.json").write_text(json.dumps(record | {"job": "ab" * 16,
                                                           "state": "running"}))
    (running / "work" / "x").mkdir(parents=True)

    doctor = run_cli("doctor", "--json", "--home", home)
    damaged = json.loads(doctor.stdout)["damaged_jobs"]
    assert [d.split(":")[0] for d in damaged] == sorted([ids[0], ids[1]])
    assert "not valid JSON" in " ".join(damaged) and "'workers'" in " ".join(damaged)
    assert (running / "work").is_dir()  # doctor only reads

    node = _node(home)
    try:
        listed = {j["job"]: j for j in _jobs(node)}
        assert set(listed) == {*ids, "ab" * 16}
        for bad in ids[:2]:
            assert listed[bad]["state"] == "done"
            assert "damaged record" in listed[bad]["error"]
        # A job left running, with its package, is taken up again (docs/jobs.md, "When
        # the chief restarts"), not listed as lost; the damaged ones beside it are not.
        assert listed["ab" * 16]["state"] in ("running", "finishing", "done"), listed["ab" * 16]
        assert listed["ab" * 16]["resumed"] is not None and not listed["ab" * 16]["error"]
        table = node.cli("jobs")
        assert table.returncode == 0 and "damaged record" in table.stdout.replace("\n", " ")

        expected = tree(tmp_path / "out3")
        for bad in ids[:2]:
            got = node.cli("fetch", bad, "-o", str(tmp_path / f"f-{bad}"))
            assert got.returncode == 0, got.stderr
            assert tree(tmp_path / f"f-{bad}") == expected

        for out in (tmp_path / "corrupt", tmp_path / "corrupt.tar.gz"):
            got = node.cli("fetch", ids[2], "-o", str(out))
            assert got.returncode == 1, got.stderr
            assert "damaged on disk" in got.stderr and "Traceback" not in got.stderr
            assert not out.exists()
            assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
    finally:
        node.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 192 KiB tmpfs, mounted for this test alone (root only; skipped otherwise)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k,mode=0700", "tmpfs",
                              str(where)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.root
def test_full_disk_under_out_leaves_nothing_and_the_job_stays_fetchable(
    home: Path, small_disk: Path, tmp_path: Path
) -> None:
    package = job(tmp_path, "big", "    return i\n", merge=BIG_MERGE, n=4)
    ran = run_cli("run", package, "-o", small_disk / "run-out")
    assert ran.returncode == 1, ran.stderr
    assert "No space left on device" in ran.stderr and "Traceback" not in ran.stderr
    assert os.listdir(small_disk) == []  # nothing half-written, no temporary left
    node = _node(home)
    try:
        for out in (small_disk / "out", small_disk / "out.tar.gz"):
            proc = _submit(node, package, "-o", str(out), "--json")
            assert proc.returncode == 1, proc.stderr
            error = json.loads(proc.stdout.splitlines()[-1])["error"]
            assert error.startswith(f"could not write the results to {out}: No space left")
            assert "octop2p fetch" in error and "\n" not in error
            assert os.listdir(small_disk) == []
            job_id = json.loads(proc.stdout.splitlines()[-1])["job"]
            fetched = node.cli("fetch", job_id, "-o", str(tmp_path / job_id))
            assert fetched.returncode == 0, fetched.stderr
            assert len((tmp_path / job_id / "big.bin").read_bytes()) == 8192 * 32
        # A read-only disk: the same one line, and nothing written.
        remount = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                                 capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        proc = node.cli("fetch", job_id, "-o", str(small_disk / "ro.tar.gz"))
        assert proc.returncode == 1 and "Read-only file system" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and os.listdir(small_disk) == []
    finally:
        node.stop()


@pytest.mark.root
def test_full_disk_under_the_chiefs_home_fails_that_job_only(
    tmp_path: Path, small_disk: Path
) -> None:
    home = make_swarm(tmp_path, ["chief"])[0]
    shutil.rmtree(home / "jobs", ignore_errors=True)
    (home / "jobs").symlink_to(small_disk)  # the job store on the small disk
    slow = job(tmp_path, "slow", "    import time\n    time.sleep(0.4)\n    return i\n", n=10)
    heavy = job(tmp_path, "heavy", "    return i\n", n=2)
    (heavy / "data.bin").write_bytes(os.urandom(256 << 10))  # more than the disk holds
    node = _node(home)
    try:
        first = _submit(node, slow, "--no-wait", "--json")
        assert first.returncode == 0, first.stderr
        slow_id = json.loads(first.stdout.splitlines()[-1])["job"]
        proc = _submit(node, heavy, "-o", str(tmp_path / "heavy-out"), "--json")
        assert proc.returncode == 1, proc.stderr
        error = json.loads(proc.stdout.splitlines()[-1])["error"]
        assert "package.tar: No space left on device" in error, error
        assert "Traceback" not in proc.stderr
        # The node lives on: the other job finishes, and both are listed.
        deadline = time.monotonic() + 60
        while (state := _states(node)[slow_id]) != "done":
            assert state in ("running", "finishing"), node.read_log()
            assert time.monotonic() < deadline, node.read_log()
            time.sleep(0.3)
        assert sorted(_states(node).values()) == ["done", "failed"]
        assert node.proc.poll() is None
    finally:
        node.stop()


def _states(node: NodeProcess) -> dict[str, str]:
    return {j["job"]: j["state"] for j in _jobs(node)}
