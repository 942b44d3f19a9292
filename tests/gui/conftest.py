"""GUI test support: the app on pytest-qt's QApplication, offscreen, driven synchronously.

Tests are plain functions. ``qtbot.waitUntil`` spins Qt's event loop, and with it the
app's trio guest run; nothing blocks inside trio (a blocking ``waitSignal`` inside an
async test that runs in the guest was seen to hang). Every wait has a timeout, and every
app is stopped (its trio run unwound, its node closed) when its test ends.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any QApplication exists

from collections.abc import Awaitable, Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

pytest.importorskip("PySide6.QtWidgets")

from gui._app import OctoApp  # noqa: E402
from gui._power import IdleMonitor  # noqa: E402
from octop2p._config import Config  # noqa: E402
from octop2p._home import Home  # noqa: E402
from octop2p.api import build_node  # noqa: E402

LOOPBACK = 'listen_host = "127.0.0.1"\nlisten_port = 0\ndiscovery = false\n'
START_TIMEOUT_MS = 15_000


@pytest.fixture
def gui_home(tmp_path: Path) -> Home:
    """A home whose node listens on loopback only, with results under tmp_path."""
    home = Home.locate(tmp_path / "home")
    home.create()
    (home.path / "config.toml").write_text(LOOPBACK)
    (home.path / "gui.toml").write_text(f'results_dir = "{tmp_path / "results"}"\n')
    return home


@pytest.fixture
def power_root(tmp_path: Path) -> Path:
    """An empty power_supply class: a machine without battery (mains power only)."""
    root = tmp_path / "power_supply"
    root.mkdir()
    return root


@pytest.fixture
def make_app(qapp: Any, qtbot: Any, power_root: Path) -> Iterator[Callable[..., OctoApp]]:
    """Build (not start) apps; each is stopped, and waited for, at the end of the test."""
    qapp.setQuitOnLastWindowClosed(False)
    apps: list[OctoApp] = []

    def make(home: Home, **kwargs: Any) -> OctoApp:
        kwargs.setdefault("tray", False)
        kwargs.setdefault("idle", IdleMonitor(None, "not available in tests"))
        kwargs.setdefault("power_root", power_root)
        app = OctoApp(qapp, home, quit_app=False, **kwargs)
        qtbot.addWidget(app.window)
        app.window.open_folder = lambda path: None  # no file manager in tests
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.quit()
    for app in apps:
        qtbot.waitUntil(lambda app=app: app.guest.done or not app.guest.started,
                        timeout=START_TIMEOUT_MS)


@pytest.fixture
def started(make_app: Callable[..., OctoApp], gui_home: Home, qtbot: Any) -> OctoApp:
    """An app running its own node in ``gui_home``, connected and loaded."""
    app = make_app(gui_home)
    app.start()
    qtbot.waitUntil(lambda: app.bridge.ready, timeout=START_TIMEOUT_MS)
    return app


def run_in_trio(qtbot: Any, app: OctoApp, fn: Callable[[], Awaitable[Any]],
                timeout: float = 10) -> Any:
    """Run ``await fn()`` in the app's trio run and return its result (spinning Qt)."""
    box: dict[str, Any] = {}

    async def task() -> None:
        try:
            box["value"] = await fn()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            box["error"] = exc

    app.guest.spawn(task)
    qtbot.waitUntil(lambda: bool(box), timeout=int(timeout * 1000))
    if "error" in box:
        raise box["error"]
    return box["value"]


def node_call(qtbot: Any, app: OctoApp, cmd: str, **args: Any) -> Any:
    """Ask the app's node through the node API, as the CLI would."""
    assert app.bridge.handle is not None
    api = app.bridge.handle.api
    return run_in_trio(qtbot, app, lambda: api.call(cmd, **args))


def start_peer(qtbot: Any, app: OctoApp, home: Home, **overrides: Any) -> Any:
    """A second node, in the app's trio run, in its own home; returns it once it serves."""
    node = build_node(home, Config.load(home), listen_host="127.0.0.1", listen_port=0,
                      discovery=False, **overrides)
    app.guest.spawn(node.serve)
    qtbot.waitUntil(lambda: node.started.is_set(), timeout=START_TIMEOUT_MS)
    return node
