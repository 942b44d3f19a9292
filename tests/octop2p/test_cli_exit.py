"""A command leaves without the interpreter's teardown (`octop2p/cli/_exit.py`), and
loses nothing by it: its exit status, everything it wrote to a pipe, its exit handlers
and the threads it left running all end as with a normal exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

COMMAND = """
import atexit, sys, threading, time
from octop2p.cli._exit import run_command

def main():
    atexit.register(lambda: open({handler!r}, "w").write("ran"))
    def late():
        time.sleep(0.3)
        open({thread!r}, "w").write("done")
    threading.Thread(target=late).start()
    sys.stdout.write("x" * 3_000_000)  # more than a pipe holds: written as it is read
    sys.stderr.write("said")
    sys.exit({code})

run_command(main)
"""


def run(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = COMMAND.format(handler=str(tmp_path / "handler"), thread=str(tmp_path / "thread"),
                            code=code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)


@pytest.mark.parametrize(("code", "status", "stderr"), [
    ("None", 0, "said"), ("3", 3, "said"), ("'a message'", 1, "saida message\n")])
def test_status_output_exit_handlers_and_threads_survive(
        tmp_path: Path, code: str, status: int, stderr: str) -> None:
    done = run(tmp_path, code)
    assert done.returncode == status
    assert done.stdout == "x" * 3_000_000 and done.stderr == stderr
    assert (tmp_path / "handler").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"


def test_the_command_keeps_its_statuses(tmp_path: Path) -> None:
    """Usage errors are 2, a missing node 69, as click and the CLI say."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    usage = subprocess.run([sys.executable, "-m", "octop2p", "nosuch"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert usage.returncode == 2 and "No such command" in usage.stderr
    absent = subprocess.run([sys.executable, "-m", "octop2p", "status", "--home",
                             str(tmp_path / "none")], capture_output=True, text=True, env=env,
                            timeout=60)
    assert absent.returncode == 69 and "no node runs in this home" in absent.stderr
