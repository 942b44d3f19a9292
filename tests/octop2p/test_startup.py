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
#: its crypto then (nacl, and these parts of `protocol`); never the network, the
#: handshake, the messages, the job-code exchange or Qt.
SIGNING = {"protocol", "protocol._identity", "protocol._codes", "protocol._crypto",
           "protocol._errors", "protocol._hashes"}
RUN_NEVER = ("zeroconf", "spake2", "PySide6", "octop2p.net")

_HOOK = """
import atexit, json, sys
def _dump(path):
    with open(path, "w") as f:
        json.dump(sorted(sys.modules), f)
atexit.register(_dump, {out!r})
{before}
from octop2p.cli import main
main({argv!r})
"""

#: With ``before=``: also the modules loaded when the job's last result is in (the
#: runner returns), before the manifest is signed.
_BEFORE_SEAL = """
import octop2p.engine._runner as _runner
_run = _runner.JobRunner.run
async def _ran(self, *args, **kwargs):
    try:
        return await _run(self, *args, **kwargs)
    finally:
        _dump({before!r})
_runner.JobRunner.run = _ran
"""


def loaded_by(tmp_path: Path, *argv: str, before: Path | None = None) -> tuple[int, set[str]]:
    """Run ``octop2p ARGV`` in a fresh interpreter; its exit code and every module it loaded."""
    out = tmp_path / "modules.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OCTOP2P_HOME=str(tmp_path / "home"))
    hook = _BEFORE_SEAL.format(before=str(before)) if before else ""
    code = _HOOK.format(out=str(out), argv=list(argv), before=hook)
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
    before = tmp_path / "before-seal.json"
    code, modules = loaded_by(tmp_path, "run", str(script), "-w", "1", "-o", str(tmp_path / "o"),
                              before=before)
    assert code == 0
    assert (tmp_path / "o" / "manifest.json").is_file()  # the job really ran, and was signed
    job_time = set(json.loads(before.read_text()))
    assert "trio" in job_time  # the check itself sees what was imported
    assert _roots(job_time, NETWORK_ONLY) == set()
    assert _roots(modules, RUN_NEVER) == set()
    assert _roots(modules, ("protocol",)) <= SIGNING  # the identity, not the networking
    assert "nacl.signing" in modules  # ... which the manifest's signature needs
    # Its stderr is no terminal: the "done:" line is plain text, and rich never loads.
    assert _roots(modules, ("rich",)) == set()


def test_status_without_a_node_loads_no_crypto(tmp_path: Path) -> None:
    code, modules = loaded_by(tmp_path, "status")
    assert code == 69  # no node runs in this home
    assert _roots(modules, ("zeroconf", "spake2", "nacl", "PySide6", "protocol")) == set()


def test_version_loads_neither_trio_nor_the_engine(tmp_path: Path) -> None:
    code, modules = loaded_by(tmp_path, "--version")
    assert code == 0
    assert _roots(modules, ("trio", "rich", "octop2p.engine._runner", *NETWORK_ONLY)) == set()


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
