"""Consent is the owner's: the app shows the node's real donation and never widens it;
what the app changes goes to the node's config.toml and the node's log says who did it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.net._control import ControlClient
from tests.conftest import ROOT
from tests.gui.conftest import LOOPBACK, START_TIMEOUT_MS, node_call
from tests.integration.nodes import NodeProcess, make_swarm

pytestmark = pytest.mark.gui


def _info(home: Path) -> dict[str, Any]:
    return trio.run(lambda: ControlClient(home / "control.sock").call("info"))


@pytest.fixture
def one_core_node(tmp_path: Path):
    (home,) = make_swarm(tmp_path, ["n"])
    (home / "config.toml").write_text(LOOPBACK)
    node = NodeProcess(home, "--no-discovery", "--donate", "--cores", "1")
    yield node
    node.stop()


def test_a_screenshot_leaves_a_one_core_node_at_one_core(one_core_node, tmp_path: Path) -> None:
    node = one_core_node
    before = _info(node.home)
    assert before["cores"] == 1
    config = (node.home / "config.toml").read_text()
    out = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run(
        [sys.executable, "-m", "octop2p", "gui", "--home", str(node.home), "--screenshot",
         str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    after = _info(node.home)
    assert after["cores"] == 1 and after["donating"] == before["donating"]
    assert "changed" not in node.read_log() and "switched" not in node.read_log()
    assert (node.home / "config.toml").read_text() == config  # the app changed nothing


def test_the_app_shows_the_nodes_cores_and_its_change_is_saved_and_logged(
    one_core_node, make_app: Any, qtbot: Any
) -> None:
    node = one_core_node
    app = make_app(Home.locate(node.home))
    app.start()
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    panel = app.window.donate
    qtbot.waitUntil(lambda: panel.cores.value() == 1, timeout=10_000)
    # Through the app's link to the node (a nested trio.run is not possible here).
    assert node_call(qtbot, app, "info")["cores"] == 1
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core here: nothing to change the node's cores to")
    panel.cores.setValue(2)  # the owner, in the app
    qtbot.waitUntil(lambda: node_call(qtbot, app, "info")["cores"] == 2, timeout=10_000)
    qtbot.waitUntil(lambda: "cores changed from 1 to 2 by the app" in node.read_log(),
                    timeout=10_000)
    assert Config.load(node.home).cores == 2
    assert "cores" not in (node.home / "gui.toml").read_text()
