"""The desktop app as a whole: Qt, trio in guest mode, the bridge, the window, the tray.

`OctoApp` puts the pieces together and owns their life: ``start()`` begins the trio run
and shows the window; ``quit()`` cancels the trio run (which stops a node the app runs,
cleanly) and ends the Qt loop once trio has unwound. :func:`run` is ``octop2p gui``.
Tests build an `OctoApp` on pytest-qt's QApplication and drive it synchronously.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QApplication

import octop2p
from octop2p.api import Home

from ._bridge import NodeBridge
from ._guest import GuestRun
from ._icons import logo_icon
from ._log import QtLogHandler
from ._power import IdleMonitor
from ._theme import ThemeFollower
from ._tray import Tray, tray_available
from ._window import MainWindow

log = logging.getLogger(__name__)

QUIT_GRACE_MS = 10_000  # a node that will not stop does not keep the app open for ever
SETTLE_MS = 1200  # --screenshot: time for first data, layouts and repaints after connecting
READY_TIMEOUT_MS = 20_000


def binding_problem() -> str | None:
    """Why the installed Qt bindings cannot run the app, or None.

    PySide6 6.12.0 returns None from void methods without taking a reference, so under
    Python < 3.12 (where None is not immortal) every call drops one, and the process
    aborts in ``none_dealloc`` within seconds. Measured here, not guessed from versions.
    """
    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    if sys.getrefcount(None) < before - 32:
        import PySide6

        return (f"PySide6 {PySide6.__version__} loses a reference to None at each call on "
                f"Python {sys.version.split()[0]}, which crashes the app; install another "
                "version: pip install 'PySide6-Essentials<6.12'")
    return None


def _examples_dir() -> str:
    """The examples of a source checkout, as the submit dialog's first folder."""
    folder = Path(octop2p.__file__).resolve().parent.parent / "examples"
    return str(folder) if folder.is_dir() else str(Path.home())


class OctoApp(QObject):
    """See the module docstring."""

    screenshot_saved = Signal(str)

    def __init__(self, qapp: QApplication, home: Home, *, tray: bool | None = None,
                 idle: IdleMonitor | None = None, power_root: Path | None = None,
                 log_handler: QtLogHandler | None = None, quit_app: bool = True) -> None:
        super().__init__()
        self.qapp = qapp
        self.quit_app = quit_app
        self.exit_code = 0
        self.guest = GuestRun(self)
        self.bridge = NodeBridge(home, self.guest.spawn,
                                 idle=idle or IdleMonitor.find(qapp.platformName()),
                                 power_root=power_root)
        self.theme = ThemeFollower(qapp, self.bridge.settings.theme)
        log.debug("appearance: %s", self.theme.apply())
        use_tray = tray_available() if tray is None else tray
        self.tray = Tray(self.bridge, self) if use_tray else None
        self.window = MainWindow(self.bridge, max_cores=os.cpu_count() or 1, tray=self.tray,
                                 log_handler=log_handler, examples=_examples_dir())
        self.window.setWindowIcon(logo_icon())
        self.theme.on_change = self.window.retint_icons
        self.window.quit_requested.connect(self.quit)
        self.window.theme_chosen.connect(self.set_theme)
        if self.tray is not None:
            self.tray.quit_requested.connect(self.quit)
            self.tray.show_window.connect(self.show_window)
        self.guest.finished.connect(self._finished)
        self._force = QTimer(self)
        self._force.setSingleShot(True)
        self._force.timeout.connect(self._give_up)

    def start(self, *, hidden: bool = False) -> None:
        """Start trio and the bridge; show the window unless ``hidden`` (and a tray)."""
        if not self.guest.started:
            self.guest.start()
        self.start_bridge()
        if hidden and self.tray is not None:
            return
        if hidden:
            log.warning("no system tray here: starting minimized instead of hidden")
            self.window.showMinimized()
        else:
            self.window.show()

    def start_bridge(self) -> None:
        """Start the bridge's connection to the node (in a started trio run)."""
        self.guest.spawn(self.bridge.run)

    def show_window(self) -> None:
        """Bring the window up (from the tray)."""
        self.window.showNormal()
        self.window.raise_()
        self.window.activateWindow()

    def set_theme(self, name: str) -> None:
        """Switch between following the system, dark and light; saved in gui.toml."""
        self.bridge.save_settings(theme=name)
        self.theme.preference = name
        self.theme.apply()

    def quit(self) -> None:
        """Stop trio (and the node, if it runs here), then end the Qt loop."""
        if self.tray is not None:
            self.tray.hide()
        self.window.quitting = True
        self.window.hide()
        if self.guest.done or not self.guest.started:
            self._finished()
            return
        self.guest.stop()
        self._force.start(QUIT_GRACE_MS)

    def _finished(self) -> None:
        self._force.stop()
        if self.guest.outcome is not None and not _ok(self.guest.outcome):
            self.exit_code = 1
        if self.quit_app:
            self.qapp.exit(self.exit_code)

    def _give_up(self) -> None:
        log.warning("the node did not stop within %d s; quitting anyway", QUIT_GRACE_MS // 1000)
        if self.quit_app:
            self.qapp.exit(self.exit_code or 1)

    # --- --screenshot ------------------------------------------------------------------

    def screenshot_then_quit(self, path: Path) -> None:
        """Once connected (or after a timeout) and settled, save the window as PNG, quit."""
        waited = 0

        def poll() -> None:
            nonlocal waited
            waited += 100
            if self.bridge.ready or waited >= READY_TIMEOUT_MS:
                QTimer.singleShot(SETTLE_MS, lambda: self._save(path))
            else:
                QTimer.singleShot(100, poll)

        QTimer.singleShot(100, poll)

    def _save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.window.grab().save(str(path), "PNG"):
            log.info("saved the window to %s", path)
            self.screenshot_saved.emit(str(path))
        else:
            log.error("could not save a screenshot to %s", path)
            self.exit_code = 1
        self.quit()


def _ok(result: object) -> bool:
    import outcome
    import trio

    if isinstance(result, outcome.Value):
        return True
    error = getattr(result, "error", None)
    return isinstance(error, trio.Cancelled)


def _setup_logging(verbose: int) -> QtLogHandler:
    """stderr as the CLI does, plus the log view; the entry point owns the handlers."""
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING - 10 * min(verbose, 2))
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    view = QtLogHandler(logging.INFO)
    logging.basicConfig(level=min(logging.INFO, stderr.level), handlers=[stderr, view],
                        force=True)
    return view


def run(home: Path | None = None, *, screenshot: Path | None = None, hidden: bool = False,
        verbose: int = 0) -> int:
    """``octop2p gui``: run the desktop app until it quits; returns the exit code."""
    qapp = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "octop2p"])
    assert isinstance(qapp, QApplication)
    problem = binding_problem()
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        return 1
    qapp.setApplicationName("octop2p")
    qapp.setApplicationDisplayName("octop2p")
    qapp.setDesktopFileName("octop2p")
    qapp.setWindowIcon(logo_icon())
    # The app decides when to quit: closing the window may only hide it (tray).
    qapp.setQuitOnLastWindowClosed(False)
    handler = _setup_logging(verbose)
    app = OctoApp(qapp, Home.locate(home), tray=False if screenshot else None,
                  log_handler=handler)
    app.start(hidden=hidden and screenshot is None)
    if screenshot is not None:
        app.screenshot_then_quit(screenshot)
    code = qapp.exec()
    return app.exit_code or code
