"""The desktop app against real nodes: donation, peers, jobs, swarm, screenshot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

import sandbox
from gui._host import ATTACHED, IN_PROCESS
from gui._jobs import JobsModel
from octop2p._config import Config
from octop2p._home import Home
from octop2p.api import NodeAPI, build_node
from octop2p.net._control import serve as serve_control
from protocol import SwarmCode
from tests.conftest import EXAMPLES, ROOT
from tests.gui.conftest import LOOPBACK, START_TIMEOUT_MS, node_call, start_peer

pytestmark = pytest.mark.gui

ALL_LAYERS = sandbox.ALL_LAYERS <= {k for k, v in sandbox.probe().items() if v.available}


def test_donate_switch_makes_the_node_donate(started: Any, qtbot: Any) -> None:
    app = started
    panel = app.window.donate
    assert node_call(qtbot, app, "info")["donating"] is False
    assert not panel.switch.isChecked()
    qtbot.mouseClick(panel.switch, Qt.MouseButton.LeftButton)
    if not ALL_LAYERS:
        # A machine without every sandbox layer must refuse, and the panel must say why.
        qtbot.waitUntil(lambda: panel.error.isVisible(), timeout=10_000)
        assert "sandbox" in panel.error.text()
        assert node_call(qtbot, app, "info")["donating"] is False
        return
    qtbot.waitUntil(lambda: node_call(qtbot, app, "info")["donating"], timeout=10_000)
    qtbot.waitUntil(lambda: panel.status.text().startswith("Donating"), timeout=10_000)
    assert app.bridge.settings.donate  # saved in the node's config.toml for the next start
    assert "donate = true" in (app.bridge.home.path / "config.toml").read_text()
    assert "\ndonate =" not in (app.bridge.home.path / "gui.toml").read_text()
    qtbot.mouseClick(panel.switch, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not node_call(qtbot, app, "info")["donating"], timeout=10_000)


def test_cpu_share_is_enforced_as_whole_cores(started: Any, qtbot: Any) -> None:
    app = started
    if not ALL_LAYERS:
        pytest.skip("this machine cannot donate (sandbox layers missing)")
    app.bridge.set_donation(donate=True, cores=2, cpu_percent=50)
    qtbot.waitUntil(lambda: node_call(qtbot, app, "info")["donating"], timeout=10_000)
    expected = max(1, min(2, os.cpu_count() or 1) * 50 // 100)
    qtbot.waitUntil(lambda: node_call(qtbot, app, "info")["cores"] == expected, timeout=10_000)
    assert "worker process" in app.window.donate.cpu_note.text()


def test_a_second_node_appears_in_the_peers_table(make_app: Any, gui_home: Home,
                                                  tmp_path: Path, qtbot: Any) -> None:
    code = SwarmCode.generate()
    gui_home.save_swarm(code)
    app = make_app(gui_home)
    app.start()
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    peer_home = Home.locate(tmp_path / "peer")
    peer_home.save_swarm(code)
    port = app.bridge.info["port"]
    peer = start_peer(qtbot, app, peer_home, peers=(f"127.0.0.1:{port}",))
    model = app.window.peers.model

    def listed() -> bool:
        return any(model.data(model.index(row, 0), model.ID_ROLE) == str(peer.id)
                   for row in range(model.rowCount()))

    qtbot.waitUntil(listed, timeout=START_TIMEOUT_MS)
    row = next(r for r in range(model.rowCount())
               if model.data(model.index(r, 0), model.ID_ROLE) == str(peer.id))
    cells = [model.data(model.index(row, c)) for c in range(model.columnCount())]
    assert cells[model.COLUMNS.index("Trusted")] == "trusted"
    assert cells[model.COLUMNS.index("Address")].startswith("127.0.0.1:")
    assert app.window.peers.stack.currentWidget() is app.window.peers.table
    assert "1 connected" in app.window.peers.summary.text()


def test_submitting_primes_through_the_dialog_completes(started: Any, qtbot: Any,
                                                         tmp_path: Path) -> None:
    app = started
    dialog = app.window.open_submit()
    dialog.set_path(str(EXAMPLES / "primes"))
    qtbot.waitUntil(lambda: dialog.submit_button.isEnabled(), timeout=10_000)
    assert "primes" in dialog.result_title.text()
    closed: list[int] = []
    dialog.finished.connect(closed.append)
    qtbot.mouseClick(dialog.submit_button, Qt.MouseButton.LeftButton)
    book = app.bridge.book
    qtbot.waitUntil(lambda: any(j.state == "done" and j.results_path for j in
                                book.jobs.values()), timeout=60_000)
    job = next(iter(book.jobs.values()))
    assert closed == [1]  # the dialog closed, accepted, once the node took the job
    model = app.window.jobs.model
    app.window.jobs.refresh()
    row = model.row_of(job.id)
    assert model.data(model.index(row, 0), JobsModel.PERCENT_ROLE) == 100
    assert model.data(model.index(row, JobsModel.COLUMNS.index("Fragments"))) == "100 / 100"
    assert job.results_path is not None
    assert job.results_path.parent == tmp_path / "results"
    assert int((job.results_path / "count.txt").read_text()) == 664579
    # The detail view shows it, with a chart and the per-worker counts of this machine.
    detail = app.window.jobs.detail
    assert detail.job_id == job.id and detail.open.isEnabled()
    assert detail.chart.points and sum(n for _, n in detail.workers.rows) == 100
    assert detail.workers.rows[0][0] == "this computer"
    # The owner is told, and the log has it.
    assert any(title == "Job finished" for title, _ in app.window.notifier.shown)
    assert "primes" in app.window.log_view.plain_text()
    # Opening the results asks the window to show the folder the results went to.
    opened: list[str] = []
    app.window.open_folder = opened.append
    qtbot.mouseClick(detail.open, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: bool(opened), timeout=10_000)
    assert opened == [str(job.results_path)]


def test_a_bad_package_shows_its_error_in_the_dialog(started: Any, qtbot: Any,
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("Split.py", "Merge.py"):
        (bad / name).write_text((EXAMPLES / "primes" / name).read_text())
    (bad / "Process.py").write_text("def process(fragment):\n    x = fragment\n    yield x\n")
    dialog = started.window.open_submit()
    dialog.set_path(str(bad))
    qtbot.waitUntil(lambda: bool(dialog.error_text), timeout=10_000)
    assert "Process.py, line 3" in dialog.error_text
    assert "only splitter yields" in dialog.error_text
    assert "yield" in dialog.excerpt.text() and dialog.excerpt.isVisible()
    assert not dialog.submit_button.isEnabled()
    # A path that is no job at all is refused too, naming the rule.
    dialog.set_path(str(tmp_path / "nothing-here"))
    qtbot.waitUntil(lambda: "job path" in dialog.error_text, timeout=10_000)


def test_cancel_from_the_detail_view(started: Any, qtbot: Any, tmp_path: Path) -> None:
    slow = tmp_path / "slow"
    slow.mkdir()
    (slow / "Split.py").write_text("def splitter():\n    for i in range(400):\n        yield i\n")
    (slow / "Process.py").write_text("import time\ndef process(i):\n    time.sleep(0.05)\n"
                                     "    return i\n")
    (slow / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    app = started
    app.bridge.submit(str(slow))
    jobs = app.window.jobs
    qtbot.waitUntil(lambda: jobs.detail.job_id is not None and jobs.detail.cancel.isEnabled(),
                    timeout=10_000)
    qtbot.mouseClick(jobs.detail.cancel, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: app.bridge.book.jobs[jobs.detail.job_id].state == "cancelled",
                    timeout=8_000)
    assert any(title == "Job cancelled" for title, _ in app.window.notifier.shown)


def test_create_and_join_swarm_dialogs(started: Any, qtbot: Any) -> None:
    from gui._dialogs import CreateSwarmDialog, JoinSwarmDialog

    app = started
    assert app.bridge.info["swarm"] is None
    create = CreateSwarmDialog(app.bridge, app.window)
    qtbot.addWidget(create)
    qtbot.mouseClick(create.create_button, Qt.MouseButton.LeftButton)
    assert create.code is not None
    code = SwarmCode.parse(create.code.text.toPlainText())
    # The app's own node restarts in the new swarm.
    qtbot.waitUntil(lambda: app.bridge.info.get("swarm") == code.swarm_id.hex(),
                    timeout=START_TIMEOUT_MS)
    join = JoinSwarmDialog(app.bridge, app.window)
    qtbot.addWidget(join)
    join.code.setPlainText("OCTO-not-a-code")
    assert not join.join.isEnabled() and join.problem.text()
    other = SwarmCode.generate()
    join.code.setPlainText(str(other))
    assert join.join.isEnabled() and not join.problem.text()
    qtbot.mouseClick(join.join, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: app.bridge.info.get("swarm") == other.swarm_id.hex(),
                    timeout=START_TIMEOUT_MS)


def test_attaches_to_the_node_running_in_the_home(make_app: Any, gui_home: Home,
                                                  qtbot: Any) -> None:
    app = make_app(gui_home)
    # As `octop2p submit`'s node does: this node runs its owner's jobs on its own cores.
    node = build_node(gui_home, Config.load(gui_home), listen_port=0, own_jobs_local=True)

    async def serve_node() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            await nursery.start(serve_control, NodeAPI(node), gui_home.control_socket)

    app.guest.start()
    app.guest.spawn(serve_node)
    qtbot.waitUntil(lambda: gui_home.control_socket.exists(), timeout=START_TIMEOUT_MS)
    app.start_bridge()
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    assert app.bridge.handle is not None and app.bridge.handle.mode == ATTACHED
    assert app.bridge.info["id"] == str(node.id)
    assert app.window.connection.text() == "attached to octop2p node"
    status = node_call(qtbot, app, "submit", path=str(EXAMPLES / "primes"))
    qtbot.waitUntil(lambda: app.bridge.book.jobs.get(status["job"]) is not None and
                    app.bridge.book.jobs[status["job"]].state == "done", timeout=30_000)


def test_the_app_runs_its_own_node_when_none_runs(started: Any) -> None:
    assert started.bridge.handle is not None and started.bridge.handle.mode == IN_PROCESS
    # ...and serves the control socket, so that the CLI attaches to it.
    assert started.bridge.home.control_socket.exists()


def test_screenshot_writes_a_non_blank_png(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(LOOPBACK)
    out = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-m", "octop2p", "gui", "--home", str(home),
                           "--screenshot", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    image = QImage(str(out))
    assert not image.isNull() and image.width() >= 800 and image.height() >= 500
    colors = {image.pixel(x, y) for x in range(0, image.width(), 7)
              for y in range(0, image.height(), 7)}
    assert len(colors) > 20  # text, widgets and the logo; a blank window has one or two
    assert not (home / "control.sock").exists()  # the app's node stopped cleanly


def test_a_locked_home_is_reported_and_retried(make_app: Any, gui_home: Home,
                                               qtbot: Any) -> None:
    lock = gui_home.lock()  # as `octop2p submit`'s temporary node holds it, serving nothing
    try:
        app = make_app(gui_home)
        app.start()
        qtbot.waitUntil(lambda: app.window.connection.text() == "no node", timeout=10_000)
        assert "another octop2p node" in app.window.node_line.text()
        assert not app.window.donate.switch.isEnabled()
    finally:
        lock.release()
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    assert app.window.connection.text() == "node in this app"


def test_closing_the_window_without_a_tray_quits(started: Any, qtbot: Any) -> None:
    app = started
    app.window.show()
    app.window.close()
    qtbot.waitUntil(lambda: app.guest.done, timeout=START_TIMEOUT_MS)
    assert app.exit_code == 0
    assert not app.bridge.home.control_socket.exists()  # the node stopped and cleaned up


def test_hidden_without_a_tray_starts_minimized(make_app: Any, gui_home: Home,
                                                qtbot: Any) -> None:
    app = make_app(gui_home, tray=False)
    app.start(hidden=True)
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    assert app.window.isMinimized() or app.window.windowState() & Qt.WindowState.WindowMinimized


def _ink_lightness(icon: Any) -> int:
    image = icon.pixmap(20, 20).toImage()
    inked = [image.pixelColor(x, y) for x in range(20) for y in range(20)
             if image.pixelColor(x, y).alpha() > 200]
    return max(c.lightness() for c in inked)


def test_switching_appearance_redraws_the_icons(started: Any, qapp: Any) -> None:
    from PySide6.QtGui import QPalette

    saved = QPalette(qapp.palette())
    button = started.window.peers.create_button
    try:
        started.set_theme("dark")
        assert _ink_lightness(button.icon()) > 160  # light lines on a dark window
        started.set_theme("light")
        assert _ink_lightness(button.icon()) < 100
        assert 'theme = "light"' in (started.bridge.home.path / "gui.toml").read_text()
    finally:
        qapp.setPalette(saved)


def test_tray_menu_pauses_and_resumes(make_app: Any, gui_home: Home, qtbot: Any) -> None:
    # Offscreen has no tray to show the icon in; its menu and messages still work.
    app = make_app(gui_home, tray=True)
    app.start(hidden=True)
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    assert app.tray is not None and not app.window.isVisible()
    assert app.tray.pause_action.text() == "Resume donating"
    app.tray.pause_action.trigger()
    assert app.bridge.settings.donate
    if ALL_LAYERS:  # else the node refuses, and the wish goes back to off
        qtbot.waitUntil(lambda: app.tray.pause_action.text() == "Pause donating", timeout=10_000)
        app.tray.pause_action.trigger()
        assert not app.bridge.settings.donate
    app.tray.open_action.trigger()
    assert app.window.isVisible()


def test_a_failing_job_shows_its_traceback(started: Any, qtbot: Any, tmp_path: Path) -> None:
    job = tmp_path / "oops"
    job.mkdir()
    (job / "Split.py").write_text("def splitter():\n    for i in range(3):\n        yield i\n")
    (job / "Process.py").write_text("def process(i):\n    return 1 / (i - 1)\n")
    (job / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    app = started
    app.bridge.submit(str(job))
    qtbot.waitUntil(lambda: any(j.state == "failed" for j in app.bridge.book.jobs.values()),
                    timeout=30_000)
    detail = app.window.jobs.detail
    qtbot.waitUntil(lambda: detail.error.isVisible(), timeout=10_000)
    assert "ZeroDivisionError" in detail.error.toPlainText()
    assert not detail.open.isEnabled() and not detail.cancel.isEnabled()
    assert any(title == "Job failed" for title, _ in app.window.notifier.shown)
