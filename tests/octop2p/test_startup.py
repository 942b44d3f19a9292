"""Start-up cost: each command imports only what it uses.

Every command runs in a fresh interpreter as a user would start it; an exit hook writes
the modules it loaded. `octop2p run` and the control commands must not load the
networking, crypto, discovery or Qt stacks they never use (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: What `octop2p run` and the control commands never need.
NETWORK_ONLY = ("zeroconf", "spake2", "nacl", "PySide6", "protocol", "octop2p.net")
#: `run` signs its results' manifest once the job is done, so it may load the identity and
#: its crypto then; never the network, the job-code exchange or Qt.
RUN_NEVER = ("zeroconf", "spake2", "PySide6", "octop2p.net")

_HOOK = """
import atexit, json, sys
def _dump():
    with open({out!r}, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump)
from octop2p.cli import main
main({argv!r})
"""


def loaded_by(tmp_path: Path, *argv: str) -> tuple[int, set[str]]:
    """Run ``octop2p ARGV`` in a fresh interpreter; its exit code and every module it loaded."""
    out = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OCTOP2P_HOME=str(tmp_path / "home"))
    code = _HOOK.format(out=str(out), argv=list(argv))
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, timeout=120
    )
    return proc.returncode, set(json.loads(out.read_text()))


def _roots(modules: set[str], banned: tuple[str, ...]) -> set[str]:
    return {m for m in modules for b in banned if m == b or m.startswith(b + ".")}


def test_run_loads_no_networking_crypto_or_qt(tmp_path: Path) -> None:
    script = tmp_path / "tiny.py"
    script.write_text(
        "source = {'a': 'x y x'}\n"
        "def mapfn(k, v):\n    for w in v.split():\n        yield w, 1\n"
        "def reducefn(k, vs):\n    return k, len(vs)\n"
    )
    code, modules = loaded_by(tmp_path, "run", str(script), "-w", "1", "-o", str(tmp_path / "o"))
    assert code == 0
    assert (tmp_path / "o").is_dir()  # the job really ran
    assert "trio" in modules  # the check itself sees what was imported
    assert _roots(modules, RUN_NEVER) == set()


def test_status_without_a_node_loads_no_crypto(tmp_path: Path) -> None:
    code, modules = loaded_by(tmp_path, "status")
    assert code == 69  # no node runs in this home
    assert _roots(modules, ("zeroconf", "spake2", "nacl", "PySide6", "protocol")) == set()


def test_version_loads_neither_trio_nor_the_engine(tmp_path: Path) -> None:
    code, modules = loaded_by(tmp_path, "--version")
    assert code == 0
    assert _roots(modules, ("trio", "octop2p.engine._runner", *NETWORK_ONLY)) == set()


def test_finished_states_match_the_protocol() -> None:
    """api.FINISHED spells the states out instead of importing protocol: keep them equal."""
    from octop2p.api import FINISHED
    from protocol import JobState

    assert FINISHED == {JobState.DONE.value, JobState.FAILED.value, JobState.CANCELLED.value}


@pytest.mark.parametrize("argv", [["id"], ["swarm", "create"]])
def test_commands_that_need_a_key_still_load_it(tmp_path: Path, argv: list[str]) -> None:
    code, modules = loaded_by(tmp_path, *argv)
    assert code == 0
    assert "nacl" in modules
