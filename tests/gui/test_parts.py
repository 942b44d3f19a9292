"""The app's parts on their own: the trio guest run, themes, bindings, layering."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from PySide6.QtGui import QPalette

from gui._app import binding_problem
from gui._chart import time_ticks
from gui._guest import GuestRun
from gui._jobs import TABLE_ROWS
from gui._store import JobView
from gui._theme import ThemeFollower, is_dark
from octop2p._home import Home
from tests.conftest import ROOT

pytestmark = pytest.mark.gui

# The node API the app may use (STYLE.md: no logic in widgets; gui -> octop2p API only).
ALLOWED = {"octop2p", "octop2p.api", "octop2p.errors", "protocol"}


def test_bindings_keep_their_references() -> None:
    assert binding_problem() is None


def test_guest_run_runs_tasks_and_stops(qapp: Any, qtbot: Any) -> None:
    guest = GuestRun()
    seen: list[str] = []

    async def slow() -> None:
        await trio.sleep(0.05)
        seen.append("slept")
        await trio.sleep_forever()

    guest.spawn(slow)  # before start: queued until the run has its nursery
    guest.start()
    qtbot.waitUntil(lambda: seen == ["slept"], timeout=10_000)
    assert guest.running
    with qtbot.waitSignal(guest.finished, timeout=10_000):
        guest.stop()
    assert guest.done and not guest.running
    guest.spawn(slow)  # after the end: ignored, not an error


def test_guest_run_reports_a_crash(qapp: Any, qtbot: Any) -> None:
    guest = GuestRun()

    async def boom() -> None:
        raise ValueError("boom")

    guest.start()
    guest.spawn(boom)
    qtbot.waitUntil(lambda: guest.done, timeout=10_000)
    assert guest.outcome is not None and "boom" in repr(guest.outcome.error)  # type: ignore[union-attr]


def test_stop_before_the_run_starts(qapp: Any, qtbot: Any) -> None:
    guest = GuestRun()
    guest.start()
    guest.stop()  # the run has not reached its root nursery yet
    qtbot.waitUntil(lambda: guest.done, timeout=10_000)


def test_theme_follows_preference_with_fusion_fallback(qapp: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("OCTOP2P_THEME", raising=False)
    saved_palette, saved_style = QPalette(qapp.palette()), qapp.style().name()
    try:
        follower = ThemeFollower(qapp, "dark")
        assert "fusion (dark)" == follower.apply()
        assert is_dark(qapp.palette())
        follower.preference = "light"
        assert follower.apply() == "fusion (light)" and not is_dark(qapp.palette())
        follower.preference = "system"  # offscreen reports no scheme: light
        assert "light" in follower.apply()
    finally:
        qapp.setStyle(saved_style)
        qapp.setPalette(saved_palette)


def _imports(path: Path, *, at_import: bool = False) -> set[str]:
    """The modules ``path`` imports; ``at_import``: only those imported when it is
    imported (not inside functions, as `octop2p gui` imports the app lazily)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    nodes = ast.walk(tree)
    if at_import:
        def module_level(node: ast.AST) -> list[ast.AST]:
            found = [node]
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found += module_level(child)
            return found
        nodes = iter(module_level(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_gui_uses_only_the_node_api() -> None:
    for path in sorted((ROOT / "gui").glob("*.py")):
        ours = {n for n in _imports(path) if n.split(".")[0] in ("octop2p", "protocol",
                                                                  "sandbox")}
        assert ours <= ALLOWED, f"{path.name} imports {sorted(ours - ALLOWED)}"


def test_the_core_never_imports_qt() -> None:
    for package in ("octop2p", "protocol", "sandbox"):
        for path in sorted((ROOT / package).rglob("*.py")):
            qt = {n for n in _imports(path, at_import=True)
                  if n.split(".")[0] in ("PySide6", "gui")}
            assert not qt, f"{path.relative_to(ROOT)} imports {sorted(qt)}"


def test_cli_works_without_importing_qt() -> None:
    code = ("import sys; import octop2p.cli; "
            "assert 'PySide6' not in sys.modules and 'gui._app' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@pytest.mark.skipif(shutil.which("dbus-run-session") is None, reason="needs dbus-run-session")
def test_idle_time_from_the_desktop_screensaver_service() -> None:
    proc = subprocess.run(["dbus-run-session", "--", sys.executable,
                           str(ROOT / "tests" / "gui" / "dbus_idle.py")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    available, source, seconds = proc.stdout.strip().splitlines()[-1].split("|")
    assert available == "True" and "screensaver service" in source
    assert float(seconds) == 77.0


@pytest.mark.skipif(shutil.which("xvfb-run") is None, reason="needs xvfb-run")
def test_idle_time_from_the_x11_screensaver_extension() -> None:
    code = ("import sys; sys.path.insert(0, '.');"
            "from PySide6.QtWidgets import QApplication; app = QApplication([]);"
            "from gui._power import IdleMonitor; m = IdleMonitor.find(app.platformName());"
            "print(app.platformName(), m.available, m.idle_seconds() is not None, m.source)")
    env = {k: v for k, v in os.environ.items()
           if k not in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "DBUS_SESSION_BUS_ADDRESS")}
    env["QT_QPA_PLATFORM"] = "xcb"
    proc = subprocess.run(["xvfb-run", "-a", sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:3] == ["xcb", "True", "True"], proc.stdout
    assert "X11 screensaver" in proc.stdout


def test_a_blocked_chief_shows_in_the_log_as_a_warning() -> None:
    import logging

    from gui._log import format_event

    level, text = format_event({"event": "blocked", "chief": "AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD",
                                "reason": "3 of its jobs broke sandbox rules here"})
    assert level == logging.WARNING
    assert text.startswith("blocked chief AAAAAAA") and "broke sandbox rules" in text


@pytest.mark.parametrize("span", [0.05, 0.23, 0.9, 2.3, 7.0, 28.0, 119.0, 600.0, 9000.0])
def test_time_ticks_are_round_and_distinct_on_short_jobs(span: float) -> None:
    ticks = time_ticks(span)
    labels = [label for _, label in ticks]
    assert 3 <= len(ticks) <= 5, labels
    assert len(set(labels)) == len(labels), labels  # never "0.1 s, 0.1 s"
    assert ticks[0] == (0.0, labels[0]) and labels[0].startswith("0 ")
    assert ticks[-1][0] <= max(span, 1.0) + 1e-9  # a job under a second spans one second
    steps = {round(b[0] - a[0], 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1  # evenly spaced
    if span < 120:
        assert all(label.endswith(" s") for label in labels)
    if span < 1:
        assert labels == ["0 s", "0.25 s", "0.5 s", "0.75 s", "1 s"]


def test_the_jobs_table_shows_its_rows_at_the_default_size(make_app: Any, gui_home: Home,
                                                         qtbot: Any) -> None:
    app = make_app(gui_home)  # not started: the layout alone
    for i in range(TABLE_ROWS + 3):
        app.bridge.book.jobs[f"{i:032x}"] = JobView(f"{i:032x}", name=f"job-{i}", state="done",
                                                    started=1000.0 + i, finished=1001.0 + i)
    app.window.show()
    app.window.jobs.refresh()
    qtbot.waitUntil(lambda: app.window.jobs.detail.isVisible())
    table = app.window.jobs.table
    row = table.verticalHeader().defaultSectionSize()
    assert table.viewport().height() >= TABLE_ROWS * row  # was 2.5 rows
    assert app.window.jobs.detail.chart.height() >= 150  # and the chart keeps its room
    app.window.resize(app.window.minimumSize())
    qtbot.waitUntil(lambda: app.window.height() == app.window.minimumHeight())
    assert table.viewport().height() >= 3 * row


def test_a_resumed_job_says_so_in_the_table_and_its_details(make_app: Any, gui_home: Home,
                                                            qtbot: Any) -> None:
    app = make_app(gui_home)
    job = JobView("ab" * 16)
    # The node API's status of a job its chief resumed after a restart.
    job.apply_status({"name": "primes", "state": "running", "phase": "fragments",
                      "fragments_done": 40, "fragments_total": 100, "started": 1000.0,
                      "resumed": 37, "workers": {}})
    app.bridge.book.jobs[job.id] = job
    app.window.show()
    app.window.jobs.refresh()
    app.window.jobs.select(job.id)
    qtbot.waitUntil(lambda: app.window.jobs.detail.isVisible())
    model = app.window.jobs.table.model()
    assert model.index(0, 0).data() == "primes (resumed)"
    assert "37 results kept" in app.window.jobs.detail.facts.text()
    job.apply_status({"name": "primes", "state": "running", "resumed": None})
    app.window.jobs.refresh()
    assert model.index(0, 0).data() == "primes"
