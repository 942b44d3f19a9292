"""Job code against its host: the node's working directory, SysV IPC, signals through
file ownership, file times, and frames that expand in the node's memory.

Each test runs the attack and proves it failed by its effect: the secret appears nowhere
the job could send it, the process it aimed at still runs, the file is unchanged.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.conftest import run_cli

from .confined import probed
from .test_hostile_jobs import attack_line, package


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
    secret = cwd / "node.key"
    secret.write_text(token)
    job = package("file_node_cwd", tmp_path / "job", SECRET=str(secret), HOW=how)
    proc = run_cli("run", job, "-w", "1", "-o", tmp_path / "out", "--json", cwd=cwd, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert "sys.path:" in proc.stderr  # the job ran, and printed its sys.path
    assert f"'{cwd}'" not in proc.stderr  # which does not hold the node's folder
    assert f"Process.py:{attack_line(job, 'Process.py')}:" in proc.stderr
    assert json.loads(proc.stdout)["rule"] == "files"
    assert not (tmp_path / "out").exists()
