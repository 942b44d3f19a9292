"""How `octop2p run` fails: the user's traceback, retries, interrupts, no leftovers."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_cli
from tests.integration.nodes import descendants as _descendants


def make_package(root: Path, process_body: str, n: int = 20, merge: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "Split.py").write_text(f"def splitter():\n    for i in range({n}):\n        yield i\n")
    (root / "Process.py").write_text(process_body)
    (root / "Merge.py").write_text(merge or (
        "def merger(result, results_dir):\n"
        "    p = results_dir / 'sum.txt'\n"
        "    old = int(p.read_text()) if p.exists() else 0\n"
        "    p.write_text(str(old + result))\n"
    ))
    return root


def test_user_exception_fails_with_their_traceback(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", (
        "def helper(x):\n"
        "    return 10 // (x - 7)\n"
        "\n"
        "def process(fragment):\n"
        "    return helper(fragment)\n"
    ))
    proc = run_cli("run", pkg, "-w", "2", "-o", tmp_path / "out")
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr
    assert 'Process.py", line 2, in helper' in proc.stderr  # their file, their line
    assert 'Process.py", line 5, in process' in proc.stderr
    assert "_runtime.py" not in proc.stderr  # none of our frames
    assert not (tmp_path / "out").exists()


def test_refused_package_names_file_and_line(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", "def process(f):\n    yield f\n")
    proc = run_cli("run", pkg)
    assert proc.returncode == 1
    assert "Process.py:2" in proc.stderr or "Process.py:1" in proc.stderr
    assert "yield" in proc.stderr


def test_dying_worker_child_is_replaced_and_job_completes(tmp_path: Path) -> None:
    # Every child dies hard on the 4th fragment it sees; each fragment still succeeds on
    # a fresh child, so the job must finish with the right sum. One worker: a retried
    # fragment then always comes first to a fresh child (with two, it could be another
    # child's 4th as well, and fail every attempt).
    pkg = make_package(tmp_path / "job", (
        "import os, signal\n"
        "seen = 0\n"
        "def process(fragment):\n"
        "    global seen\n"
        "    seen += 1\n"
        "    if seen == 4:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return fragment\n"
    ), n=30)
    proc = run_cli("run", pkg, "-w", "1", "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert int((tmp_path / "out" / "sum.txt").read_text()) == sum(range(30))
    assert proc.stderr.count("lost with fragments") >= 9  # it really did die, often


def test_fragment_that_always_kills_its_child_fails_the_job(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", (
        "import os, signal\n"
        "def process(fragment):\n"
        "    if fragment == 5:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return fragment\n"
    ), n=10)
    started = time.monotonic()
    proc = run_cli("run", pkg, "-w", "2", "-o", tmp_path / "out", timeout=60)
    assert proc.returncode == 1
    assert "fragment 5 failed 3 times" in proc.stderr
    assert time.monotonic() - started < 30


def test_fragments_are_numbered_from_zero_in_every_message(tmp_path: Path) -> None:
    # The engine numbers fragments from 0 (the splitter's 6th fragment "failed 3 times" as
    # "fragment 5" above); the splitter's own size check, in its sandboxed child, names
    # a fragment by the same number.
    big = make_package(tmp_path / "big", "def process(fragment):\n    return 0\n")
    (big / "Split.py").write_text(
        "def splitter():\n    for i in range(6):\n        yield 'x' * (5000 if i == 3 else 1)\n")
    (big / "job.toml").write_text("[limits]\nfragment_bytes = 1000\n")
    too_big = run_cli("run", big, "-w", "1", "-o", tmp_path / "out", timeout=60)
    assert too_big.returncode == 1
    assert re.search(r"fragment 3 is \d+ bytes; this job's limit is 1000", too_big.stderr), \
        too_big.stderr


def test_ctrl_c_stops_every_child_and_exits_130(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", (
        "def process(fragment):\n"
        "    x = 0\n"
        "    for i in range(3 * 10**7):\n"  # bounded: ends by itself in seconds
        "        x += i\n"
        "    return fragment\n"
    ), n=8)
    proc = subprocess.Popen(
        [sys.executable, "-m", "octop2p", "run", str(pkg), "-w", "2", "-o", str(tmp_path / "o")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    descendants: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(descendants) < 4:
        descendants |= _descendants(proc.pid)
        time.sleep(0.1)
    assert len(descendants) >= 3, "fork server and children should be running"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    time.sleep(0.5)
    alive = [pid for pid in descendants if _alive(pid)]
    assert alive == [], f"left running: {alive}"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_redundancy_runs_each_fragment_on_two_workers(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", (
        "import os\n"
        "def process(fragment):\n"
        "    print(f'ran {fragment} in {os.getpid()}')\n"
        "    return fragment\n"
    ), n=12)
    (pkg / "job.toml").write_text("redundancy = 2\n")
    proc = run_cli("run", pkg, "-w", "2", "-o", tmp_path / "out", "--json")
    assert proc.returncode == 0, proc.stderr
    assert int((tmp_path / "out" / "sum.txt").read_text()) == sum(range(12))  # merged once
    runs = [line.split() for line in proc.stderr.splitlines() if " ran " in line]
    for i in range(12):
        pids = {r[-1] for r in runs if r[-3] == str(i)}
        assert len(pids) == 2, f"fragment {i} ran in {pids}"  # two distinct children


def test_redundancy_needs_enough_workers(tmp_path: Path) -> None:
    pkg = make_package(tmp_path / "job", "def process(f):\n    return f\n")
    (pkg / "job.toml").write_text("redundancy = 3\n")
    proc = run_cli("run", pkg, "-w", "2")
    assert proc.returncode == 1
    assert "redundancy = 3 needs at least that many workers" in proc.stderr


def test_dns_lookup_is_refused_as_network(tmp_path: Path) -> None:
    script = tmp_path / "lookup.py"
    script.write_text(
        "import socket\n"
        "source = {'a': 'b'}\n"
        "def mapfn(k, v):\n"
        "    socket.getaddrinfo('example.org', 80)\n"
        "    yield k, 1\n"
        "def reducefn(k, vs):\n"
        "    return k, len(vs)\n"
    )
    proc = run_cli("run", script, "-o", tmp_path / "out")
    assert proc.returncode == 1
    assert "lookup.py:4" in proc.stderr and "(rule: network)" in proc.stderr


def test_a_merger_flooding_results_dir_in_one_call_is_stopped_in_that_call(
        tmp_path: Path) -> None:
    """The file quota is watched while the merger runs: one call that makes files and
    then keeps the child busy is killed there, not after wall_seconds."""
    pkg = make_package(tmp_path / "job", "def process(fragment):\n    return fragment\n", n=1,
                       merge=(
        "import time\n"
        "def merger(result, results_dir):\n"
        "    for i in range(400):\n"
        "        (results_dir / f'f{i}').write_text('x')\n"
        "    time.sleep(100)\n"
    ))
    (pkg / "job.toml").write_text("[limits]\nmerge_output_files = 50\n")
    proc = run_cli("run", pkg, "-w", "1", "-o", tmp_path / "out", timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "more than 50 files" in proc.stderr and "(rule: merge output)" in proc.stderr
