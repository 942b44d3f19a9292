"""The fork server's start command in a frozen (PyInstaller) app, and the bundle's entry
point that answers it: there ``sys.executable`` is the bundle, which cannot run ``-m``."""

from __future__ import annotations

import ast
import pickle
import stat
import sys
from pathlib import Path

import pytest
import trio

import sandbox
from octop2p.engine._children import fork_server_command, open_fork_server
from octop2p.engine._limits import Limits

ENTRY = Path(__file__).resolve().parents[2] / "packaging" / "entry.py"


def test_plain_python_runs_the_module() -> None:
    # -P: the working directory stays out of sys.path, so out of what jobs may read.
    assert fork_server_command(7) == [sys.executable, "-P", "-m", "sandbox._forkserver", "7"]


def test_frozen_app_passes_the_flag_to_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert fork_server_command(7) == [sys.executable, "--octop2p-fork-server", "7"]


def test_entry_point_knows_the_same_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    tree = ast.parse(ENTRY.read_text())
    flags = [node.value.value for node in ast.walk(tree)
             if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
             and any(isinstance(t, ast.Name) and t.id == "_FORK_SERVER_FLAG"
                     for t in node.targets)]
    assert flags == [fork_server_command(7)[1]]


@pytest.fixture
def frozen_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in for the bundle's program: packaging/entry.py under this Python."""
    program = tmp_path / "octop2p"
    program.write_text(f'#!/bin/sh\nexec {sys.executable} {ENTRY} "$@"\n')
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    return program


async def test_frozen_fork_server_serves_a_child(frozen_python: Path, tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "Process.py").write_text("def process(x):\n    return x * 2\n")
    spec = {
        "role": "work", "kind": "package", "job_dir": str(job), "script": None,
        "results_dir": None, "limits": Limits().to_dict(), "options": {},
        "policy": sandbox.Policy(read_paths=(str(job),), layers=frozenset()).to_dict(),
    }
    with trio.fail_after(20):
        async with open_fork_server() as fs:
            child = await fs.spawn(spec, max_frame=1 << 20)
            try:
                assert (await child.receive())[0] == "ready"
                await child.send(["process", [[0, pickle.dumps(21)]]])
                reply = await child.receive()
            finally:
                await child.aclose()
    assert reply[0] == "result" and pickle.loads(reply[2]) == 42


def test_entry_point_runs_the_cli() -> None:
    import subprocess

    done = subprocess.run([sys.executable, str(ENTRY), "--version"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("octop2p, version")
