"""The node's side of the fork server: spawning, talking to and losing sandboxed children."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import sandbox
from octop2p.engine._children import ChildDied, ChildReported, open_fork_server
from octop2p.engine._limits import Limits


def spec_for(job: Path, role: str = "work") -> dict:
    limits = Limits()
    return {
        "role": role, "kind": "package", "job_dir": str(job), "script": None,
        "results_dir": None, "limits": limits.to_dict(), "options": {"partitions": 2},
        "policy": sandbox.Policy(read_paths=(str(job),), memory_bytes=256 << 20,
                                 layers=frozenset()).to_dict(),
    }


@pytest.fixture
def job(tmp_path: Path) -> Path:
    (tmp_path / "Process.py").write_text(
        "import os\n"
        "def process(x):\n"
        "    if x == 'die':\n"
        "        os._exit(3)\n"
        "    if x == 'raise':\n"
        "        raise ValueError('nope')\n"
        "    return x * 2\n"
    )
    return tmp_path


async def _roundtrip(fs, job: Path, value: object) -> list:
    import pickle

    child = await fs.spawn(spec_for(job), max_frame=1 << 20)
    try:
        assert (await child.receive())[0] == "ready"
        await child.send(["process", [[0, pickle.dumps(value)]]])
        return await child.receive()
    finally:
        await child.aclose()


async def test_spawn_and_process(job: Path) -> None:
    import pickle

    with trio.fail_after(20):
        async with open_fork_server() as fs:
            reply = await _roundtrip(fs, job, 21)
    assert reply[0] == "result" and pickle.loads(reply[2]) == 42


async def test_error_frame_and_exit_status(job: Path) -> None:
    with trio.fail_after(20):
        async with open_fork_server() as fs:
            with pytest.raises(ChildReported) as reported:
                await _roundtrip(fs, job, "raise")
            assert "ValueError" in reported.value.info["traceback"]
            with pytest.raises(ChildDied) as died:
                await _roundtrip(fs, job, "die")
            assert died.value.returncode == 3


async def test_fork_server_outlives_the_thread_that_started_it(
    job: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """trio starts processes from a worker thread; when that thread idles out, the fork
    server must keep running (a PR_SET_PDEATHSIG on it once killed every long job)."""
    import trio._core._thread_cache as thread_cache

    monkeypatch.setattr(thread_cache, "IDLE_TIMEOUT", 0.2)
    with trio.fail_after(20):
        async with open_fork_server() as fs:
            await trio.sleep(1.0)  # the spawning thread has exited by now
            reply = await _roundtrip(fs, job, 5)
    assert reply[0] == "result"


async def test_children_die_with_the_fork_server(job: Path) -> None:
    with trio.fail_after(20):
        async with open_fork_server() as fs:
            child = await fs.spawn(spec_for(job), max_frame=1 << 20)
            await child.receive()
            pid = child.pid
        # The block has closed the fork server; its child must be gone too.
        for _ in range(50):
            if not _alive(pid):
                break
            await trio.sleep(0.1)
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


