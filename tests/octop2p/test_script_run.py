"""A script job's first and last children in `octop2p run`.

The head start: `run` asks the fork server for the split child before the engine loads,
and the engine adopts that child only if it would have asked for the same spec. The
merge child for ``final`` is spawned as the reduce starts (its import of the script
overlaps the reduce); what it prints while loading must still lead the output, once,
as when it was spawned after the reduce.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from octop2p.engine._children import open_fork_server
from octop2p.engine._forkstart import start_server
from octop2p.engine._headstart import head_start, local_partitions, split_spec
from octop2p.engine._package import JobSpec, prepare

ROOT = Path(__file__).resolve().parents[2]
MAX_FRAME = 64 << 20

SCRIPT = """\
source = {"a": "x y x", "b": "y"}

def mapfn(key, value):
    for word in value.split():
        yield word, 1

def reducefn(key, values):
    return len(values)

def final(key, value):
    print(key, value)
"""


def job(tmp_path: Path) -> JobSpec:
    (tmp_path / "count.py").write_text(SCRIPT)
    return prepare(tmp_path / "count.py")


async def test_the_early_split_child_is_adopted_once_and_serves_the_job(tmp_path: Path) -> None:
    spec = job(tmp_path)
    server = start_server()
    layers = head_start(server, spec, 1)
    assert set(server.early) == {"split"}
    wanted = split_spec(spec, partitions=local_partitions(spec, 1), layers=layers)
    async with open_fork_server(server) as fs:
        child = await fs.adopt(wanted, max_frame=MAX_FRAME)
        assert child is not None
        assert (await child.receive())[0] == "ready"
        await child.send(["next", 8])
        reply = await child.receive()
        assert reply[0] == "fragments" and reply[2] is True  # all of the source
        assert [pair for task in reply[1] for pair in pickle.loads(task)] == [
            ("a", "x y x"), ("b", "y")]
        await child.aclose()
        assert await fs.adopt(wanted, max_frame=MAX_FRAME) is None  # once only


async def test_an_early_child_asked_with_another_spec_is_killed(tmp_path: Path) -> None:
    spec = job(tmp_path)
    server = start_server()
    layers = head_start(server, spec, 1)
    ident = server.early["split"].ident
    async with open_fork_server(server) as fs:
        other = split_spec(spec, partitions=7, layers=layers)  # not what was asked for
        assert await fs.adopt(other, max_frame=MAX_FRAME) is None
        assert await fs.exit_code(ident) == -9  # SIGKILL, from the server


def test_a_server_never_adopted_is_stopped(tmp_path: Path) -> None:
    server = start_server()
    head_start(server, job(tmp_path), 2)
    server.close()
    assert server.proc.returncode is not None
    assert server.early == {}


_HOOK = """
import atexit, json, sys
import octop2p.engine._children as children
adopted = []
atexit.register(lambda: open({out!r}, "w").write(json.dumps(adopted)))
_adopt = children.ForkServer.adopt
async def adopt(self, spec, **kwargs):
    child = await _adopt(self, spec, **kwargs)
    adopted.append([spec["role"], child is not None])
    return child
children.ForkServer.adopt = adopt
from octop2p.cli import main
main({argv!r})
"""


def run(tmp_path: Path, script: str, code: str | None = None) -> subprocess.CompletedProcess:
    """``octop2p run count.py -w 2 -o o`` in a fresh interpreter (``code``: one that calls
    the CLI itself); it must succeed."""
    (tmp_path / "count.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OCTOP2P_HOME=str(tmp_path / "home"))
    argv = ["run", "count.py", "-w", "2", "-o", "o"]
    cmd = ["-c", code] if code is not None else ["-m", "octop2p", *argv]
    proc = subprocess.run([sys.executable, *cmd], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_run_adopts_its_head_start(tmp_path: Path) -> None:
    out = tmp_path / "adopted.json"
    proc = run(tmp_path, SCRIPT, _HOOK.format(out=str(out), argv=["run", "count.py", "-w", "2",
                                                                  "-o", "o"]))
    assert proc.stdout == "x 2\ny 2\n"
    adopted = json.loads(out.read_text())
    assert ["split", True] in adopted
    assert ["work", True] not in adopted  # only the split child was asked for early


def test_what_the_merge_child_prints_while_loading_leads_the_output(tmp_path: Path) -> None:
    proc = run(tmp_path, 'print("loading")\n' + SCRIPT)
    assert (tmp_path / "o" / "output.txt").read_text() == "loading\nx 2\ny 2\n"
    assert proc.stdout == "loading\nx 2\ny 2\n"
    # The split and work children printed it too, as themselves, on stderr.
    assert "split: loading" in proc.stderr and "work: loading" in proc.stderr
