"""Job code against its host: the node's working directory, SysV IPC, signals through
file ownership, file times, and a reply frame that expands in the node's memory.

Each test runs the attack and proves it failed by its effect: the secret appears nowhere
the job could send it, the process it aimed at still runs, the file is unchanged, the
node's memory stayed small. Jobs through the engine run on this module's own node (the
fixture of test_hostile_jobs); single calls run in `run_confined`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox import _landlock
from tests.conftest import run_cli

from . import test_hostile_jobs as hostile
from .confined import alive, probed, run_confined, victim
from .conftest import Box
from .test_confine import EPERM, outcome
from .test_hostile_jobs import Node, attack, attack_line, package

# The hostile corpus's fixtures: this module gets a node (a fork server) of its own.
secret = hostile.secret
node = hostile.node

_libc = ctypes.CDLL(None, use_errno=True)
_libc.shmat.restype = ctypes.c_void_p
_IPC_CREAT, _IPC_EXCL, _IPC_RMID = 0o1000, 0o2000, 0
F_SETSIG, F_SETOWN_EX, F_OWNER_PID = 10, 15, 1


def _require_every_layer() -> None:
    missing = sorted(name for name, st in probed().items() if not st.available)
    if missing:
        pytest.skip(f"sandbox layers unavailable here: {', '.join(missing)}")


# --- the node's working directory ------------------------------------------------------


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_job_cannot_read_the_nodes_working_directory(tmp_path: Path, how: str) -> None:
    """`octop2p run` started in a folder that holds a secret, as a user's own folder does."""
    _require_every_layer()
    cwd = tmp_path / "where-the-user-was"
    cwd.mkdir()
    token = "cwdsecret-" + secrets.token_hex(16)
    key = cwd / "node.key"
    key.write_text(token)
    job = package("file_node_cwd", tmp_path / "job", SECRET=str(key), HOW=how)
    proc = run_cli("run", job, "-w", "1", "-o", tmp_path / "out", "--json", cwd=cwd, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert "sys.path:" in proc.stderr  # the job ran, and printed its sys.path
    assert f"'{cwd}'" not in proc.stderr  # which does not hold the node's folder
    assert f"Process.py:{attack_line(job, 'Process.py')}:" in proc.stderr
    assert json.loads(proc.stdout)["rule"] == "files"
    assert not (tmp_path / "out").exists()


# --- SysV IPC --------------------------------------------------------------------------


@pytest.fixture
def segment() -> Iterator[tuple[int, bytes]]:
    """A 0600 SysV shared-memory segment of the test's, holding a secret: (id, secret)."""
    token = ("shmsecret-" + secrets.token_hex(16)).encode()
    key = int.from_bytes(os.urandom(3), "big") + 1
    shmid = _libc.shmget(key, 4096, _IPC_CREAT | _IPC_EXCL | 0o600)
    assert shmid >= 0, os.strerror(ctypes.get_errno())
    try:
        address = _libc.shmat(shmid, None, 0)
        assert address not in (None, ctypes.c_void_p(-1).value)
        ctypes.memmove(address, token, len(token))
        _libc.shmdt(ctypes.c_void_p(address))
        yield shmid, token
    finally:
        _libc.shmctl(shmid, _IPC_RMID, None)


def test_job_cannot_list_or_attach_the_hosts_shared_memory(
    node: Node, tmp_path: Path, segment: tuple[int, bytes]
) -> None:
    shmid, token = segment
    hit = attack(node, tmp_path, "ipc_shm", SHMID=shmid, SIZE=len(token))
    assert token.decode() not in hit.outcome.text()
    assert "listed: []" in hit.outcome.out  # not even its id showed
    hit.assert_named("processes", "Process.py", limit="System V shared memory")


def _shm_attack(shmid: int, size: int) -> object:
    buf = ctypes.create_string_buffer(256)
    address = _libc.shmat(shmid, None, 0)
    found = (-ctypes.get_errno() if address in (None, ctypes.c_void_p(-1).value)
             else ctypes.string_at(address, size))
    return {"stat": _libc.shmctl(shmid, 2, buf), "attach": found}  # IPC_STAT


@pytest.mark.parametrize(
    ("layers", "refusal"),
    [({"userns", "netns"}, -errno.EINVAL), ({"seccomp"}, -errno.EPERM)],
    ids=["namespace alone", "seccomp alone"],
)
def test_each_ipc_lock_holds_alone(
    box: Box, segment: tuple[int, bytes], layers: set[str], refusal: int
) -> None:
    shmid, token = segment
    report = run_confined(lambda: _shm_attack(shmid, len(token)),
                          box.policy(layers=frozenset(layers)))
    assert token not in report.text.encode()
    assert report.value == {"stat": -1, "attach": refusal}


# --- signals through fcntl, with Landlock as an older kernel has it ---------------------


def test_fcntl_cannot_aim_sigio_at_another_process(box: Box) -> None:
    """Landlock ABI 5 (Linux before 6.12) does not scope signals; seccomp must."""
    if _landlock.abi_status()[0] < 1:
        pytest.skip("no Landlock here")
    with victim() as target:

        def attack() -> dict[str, object]:
            read_end, write_end = os.pipe()
            owner = (ctypes.c_int * 2)(F_OWNER_PID, target.pid)  # struct f_owner_ex
            tries = {
                "F_SETOWN": outcome(lambda: fcntl.fcntl(read_end, fcntl.F_SETOWN, target.pid)),
                "F_SETSIG": outcome(lambda: fcntl.fcntl(read_end, F_SETSIG, signal.SIGKILL)),
                "F_SETOWN_EX": outcome(lambda: fcntl.fcntl(read_end, F_SETOWN_EX, bytes(owner))),
            }
            flags = fcntl.fcntl(read_end, fcntl.F_GETFL)
            fcntl.fcntl(read_end, fcntl.F_SETFL, flags | os.O_ASYNC)  # signal on input...
            os.write(write_end, b"now")  # ...which this is
            tries["own pid"] = outcome(lambda: fcntl.fcntl(read_end, fcntl.F_GETOWN))
            return tries

        report = run_confined(attack, box.policy(landlock_abi=5))
        time.sleep(0.1)  # a signal, had one been sent, would have landed by now
        assert alive(target)
    refused = (*EPERM, "processes")
    assert report.value == {"F_SETOWN": refused, "F_SETSIG": refused, "F_SETOWN_EX": refused,
                            "own pid": 0}


# --- file times and truncate -------------------------------------------------------------


def test_file_times_and_truncate_by_path_are_refused(box: Box) -> None:
    """On the node's key outside, and on the job's own read-only file, as Landlock ABI 2
    (no TRUNCATE right) would leave them."""
    job_file = box.job / "data.txt"
    before = {path: (path.stat().st_mtime_ns, path.read_bytes()) for path in (box.secret, job_file)}

    def attack() -> dict[str, object]:
        tries: dict[str, object] = {}
        for name, path in (("outside", box.secret), ("job", job_file)):
            tries[f"utime {name}"] = outcome(lambda p=path: os.utime(p, (0, 0)))
            tries[f"utime now {name}"] = outcome(lambda p=path: os.utime(p))
            tries[f"truncate {name}"] = outcome(lambda p=path: os.truncate(p, 0))
        return tries

    report = run_confined(attack, box.policy(landlock_abi=2))
    for path, (mtime, data) in before.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, data)
    assert report.value == {
        f"{call} {where}": (*EPERM, "files")
        for where in ("outside", "job") for call in ("utime", "utime now", "truncate")
    }


def test_a_merger_still_shortens_a_file_it_opened(box: Box) -> None:
    def merge() -> tuple[int, str]:
        with open(box.results / "out.txt", "w+") as f:
            f.write("0123456789")
            f.truncate(4)  # ftruncate on its own fd
        (box.results / "again.txt").write_text("x" * 100)
        (box.results / "again.txt").write_text("short")  # O_TRUNC on open
        return os.path.getsize(box.results / "out.txt"), (box.results / "again.txt").read_text()

    report = run_confined(merge, box.policy())
    assert report.value == (4, "short"), report


# --- a reply frame that expands in the node ----------------------------------------------


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def test_reply_pipe_bomb_fails_the_job_and_the_node_stays_small(
    node: Node, tmp_path: Path
) -> None:
    with open("/proc/self/clear_refs", "w") as f:  # VmHWM := VmRSS, so the peak is this test's
        f.write("5")
    start = _rss_kib("VmRSS")
    hit = attack(node, tmp_path, "pipe_bomb")
    grown_mb = (_rss_kib("VmHWM") - start) / 1024
    hit.assert_named("protocol", limit="more than 65536 values")
    assert grown_mb < 300, f"the node grew by {grown_mb:.0f} MB"



# --- a results folder of many empty files ------------------------------------------------


def test_merger_that_makes_too_many_files_fails_the_job(node: Node, tmp_path: Path) -> None:
    """Bytes are not the only cost: the node walks, packs and removes every entry."""
    hit = attack(node, tmp_path, "many_merge_files")
    hit.assert_named("merge output", limit="merge_output_files = 50")
    # Checked between merge batches: at most the four results' 30 entries each got made.
    assert len(hit.outcome.results) <= 4 * 29
