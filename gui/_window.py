"""The main window: a header, the donate panel at the side, tabs for jobs, peers and log.

The window arranges the views and routes the few actions that belong to the whole app
(opening a folder, quitting, the appearance); everything else is in the views, which
talk to the bridge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QActionGroup,
    QCloseEvent,
    QColor,
    QDesktopServices,
    QKeySequence,
    QPainter,
    QPaintEvent,
)
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

import octop2p

from ._bridge import NodeBridge
from ._dialogs import CreateSwarmDialog, JoinSwarmDialog, ShowCodeDialog, SubmitDialog
from ._donate import DonatePanel
from ._host import IN_PROCESS
from ._icons import icon, paint_logo, retint, tinted
from ._jobs import JobsPanel
from ._log import LogView, QtLogHandler
from ._peers import PeersPanel
from ._store import short_id
from ._tray import Notifier, Tray
from ._widgets import Badge, EmptyState, caption


class _Logo(QWidget):
    def __init__(self, size: int = 40, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFixedSize(size, size)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        paint_logo(painter, QRectF(self.rect()))


class MainWindow(QMainWindow):
    """See the module docstring."""

    quit_requested = Signal()
    theme_chosen = Signal(str)

    def __init__(self, bridge: NodeBridge, *, max_cores: int, tray: Tray | None = None,
                 log_handler: QtLogHandler | None = None, examples: str = "") -> None:
        super().__init__()
        self.bridge = bridge
        self.tray = tray
        self.examples = examples
        self.quitting = False
        self.told_about_tray = False
        self.open_folder = self._open_folder  # replaceable (tests must not start a file manager)
        self.setWindowTitle("octop2p")
        self.resize(1180, 760)
        self.setMinimumSize(QSize(940, 600))

        central = QWidget()
        outer = QVBoxLayout(central)
        outer.setContentsMargins(16, 12, 16, 8)
        outer.setSpacing(12)
        outer.addLayout(self._header())
        body = QHBoxLayout()
        body.setSpacing(16)
        self.donate = DonatePanel(bridge, max_cores)
        body.addWidget(self.donate)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        # Flat tabs with an accent underline: calmer than framed tabs beside the card.
        self.tabs.setStyleSheet(
            "QTabWidget::pane { border: none; border-top: 1px solid palette(midlight); }"
            "QTabBar::tab { padding: 8px 16px 8px 12px; border: none; margin-right: 2px;"
            " border-bottom: 2px solid transparent; background: transparent; }"
            "QTabBar::tab:selected { border-bottom: 2px solid #1fb5a3; font-weight: 600; }"
            "QTabBar::tab:hover:!selected { border-bottom: 2px solid palette(mid); }")
        self.jobs = JobsPanel(bridge)
        self.peers = PeersPanel(bridge)
        self.log_view = LogView(bridge, log_handler)
        self.tab_icons = ("jobs", "peers", "log")
        self.tabs.addTab(self.jobs, icon("jobs"), "Jobs")
        self.tabs.addTab(self.peers, icon("peers"), "Peers")
        self.tabs.addTab(self.log_view, icon("log"), "Log")
        body.addWidget(self.tabs, 1)
        outer.addLayout(body, 1)
        self.setCentralWidget(central)
        self.notifier = Notifier(self, tray)
        self.home_label = QLabel()
        self.statusBar().addPermanentWidget(self.home_label)
        self._menus()

        bridge.connected.connect(self._connected)
        bridge.disconnected.connect(self._disconnected)
        bridge.info_changed.connect(self._info)
        bridge.notify.connect(self.notifier.notify)
        bridge.error.connect(lambda text: self.statusBar().showMessage(text, 10000))
        bridge.open_folder.connect(lambda path: self.open_folder(path))
        bridge.results_ready.connect(
            lambda _job, path: self.statusBar().showMessage(f"Results in {path}", 10000))
        self.home_label.setText(f"home {bridge.home.path}")

    # --- layout --------------------------------------------------------------------------

    def _header(self) -> QHBoxLayout:
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addWidget(_Logo(40))
        titles = QVBoxLayout()
        titles.setSpacing(0)
        title = QLabel("octop2p")
        font = title.font()
        font.setPointSizeF(font.pointSizeF() * 1.55)
        font.setWeight(font.Weight.Bold)
        title.setFont(font)
        titles.addWidget(title)
        self.node_line = caption("Starting…")
        self.node_line.setWordWrap(False)
        titles.addWidget(self.node_line)
        row.addLayout(titles)
        row.addStretch(1)
        self.connection = Badge("connecting", "muted")
        row.addWidget(self.connection, 0, Qt.AlignmentFlag.AlignVCenter)
        self.submit_button = QPushButton(icon("submit", QColor("white")), "Submit job…")
        self.submit_button.setObjectName("primary")
        self.submit_button.setMinimumHeight(34)
        self.submit_button.setStyleSheet(
            "QPushButton#primary { background: #169c8f; color: white; border: none;"
            " border-radius: 8px; padding: 6px 16px; font-weight: 600; }"
            "QPushButton#primary:hover { background: #1bb0a2; }"
            "QPushButton#primary:pressed { background: #12867b; }"
            "QPushButton#primary:disabled { background: rgba(128,128,128,80); }")
        self.submit_button.clicked.connect(self.open_submit)
        row.addWidget(self.submit_button, 0, Qt.AlignmentFlag.AlignVCenter)
        return row

    def _menus(self) -> None:
        bar = self.menuBar()
        app_menu = bar.addMenu("&File")
        submit = app_menu.addAction("&Submit job…", self.open_submit)
        submit.setShortcut(QKeySequence.StandardKey.New)
        tinted(submit, "submit")
        tinted(app_menu.addAction("Open the &results folder", self._open_results_root),
               "folder")
        app_menu.addSeparator()
        quit_action = app_menu.addAction("&Quit", self.request_quit)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        swarm = bar.addMenu("&Swarm")
        tinted(swarm.addAction("&Create a swarm…",
                               lambda: CreateSwarmDialog(self.bridge, self).exec()), "plus")
        tinted(swarm.addAction("&Join a swarm…",
                               lambda: JoinSwarmDialog(self.bridge, self).exec()), "link")
        self.show_code_action = swarm.addAction("Show the join &code", self._show_code)
        tinted(self.show_code_action, "key")
        view = bar.addMenu("&View")
        appearance = view.addMenu("&Appearance")
        group = QActionGroup(self)
        for name in ("system", "dark", "light"):
            action = QAction(name.capitalize() if name != "system" else "Follow the system",
                             group)
            action.setCheckable(True)
            action.setChecked(self.bridge.settings.theme == name)
            action.triggered.connect(lambda _checked, n=name: self.theme_chosen.emit(n))
            appearance.addAction(action)
        help_menu = bar.addMenu("&Help")
        help_menu.addAction("&About octop2p", self._about)

    # --- node state ----------------------------------------------------------------------

    def _connected(self, info: dict[str, Any]) -> None:
        mode = "node in this app" if info.get("mode") == IN_PROCESS else "attached to octop2p node"
        self.connection.set(mode, "ok")
        self.submit_button.setEnabled(True)
        self._info(info)

    def _disconnected(self, reason: str) -> None:
        self.connection.set("no node", "error")
        self.node_line.setText(f"No node: {reason}. Trying again…")
        self.statusBar().showMessage(reason, 10000)

    def _info(self, info: dict[str, Any]) -> None:
        if not info.get("id"):
            return
        parts = [f"node {short_id(info['id'])}", str(info.get("name") or "")]
        if info.get("port"):
            parts.append(f"port {info['port']}")
        parts.append(f"swarm {info['swarm'][:8]}" if info.get("swarm") else "no swarm")
        self.node_line.setText(" · ".join(p for p in parts if p))
        self.node_line.setToolTip(f"node id {info['id']}")
        self.show_code_action.setEnabled(bool(info.get("swarm")))

    # --- actions -------------------------------------------------------------------------

    def open_submit(self) -> SubmitDialog:
        """Open the submit dialog (returned, so that tests can drive it)."""
        dialog = SubmitDialog(self.bridge, self, start_dir=self.examples)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _open_folder(self, path: str) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(path))

    def _open_results_root(self) -> None:
        root = Path(self.bridge.settings.results_dir).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        self.open_folder(str(root))

    def _show_code(self) -> None:
        code = self.bridge.swarm_code()
        if code:
            ShowCodeDialog(code, self).exec()

    def _about(self) -> None:
        QMessageBox.about(self, "About octop2p",
                          f"<b>octop2p {octop2p.__version__}</b><br><br>Pool the computers on "
                          "your network to run Python jobs. Other people's code runs only "
                          "while you donate, and only inside the sandbox.")

    def request_quit(self) -> None:
        """Quit the app (stopping a node it runs)."""
        self.quitting = True
        self.quit_requested.emit()

    def changeEvent(self, event: QEvent) -> None:  # noqa: N802 - Qt's name
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.retint_icons()
        super().changeEvent(event)

    def retint_icons(self) -> None:
        """Light <-> dark: line icons are drawn in the text colour, so draw them again."""
        retint(self)
        for index, name in enumerate(self.tab_icons):
            self.tabs.setTabIcon(index, icon(name))
        for empty in self.findChildren(EmptyState):
            empty.repaint_icon()

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        if (self.tray is not None and self.bridge.settings.close_to_tray
                and not self.quitting):
            # With a tray, closing the window keeps the node (and donation) running.
            event.ignore()
            self.hide()
            if not self.told_about_tray:
                self.told_about_tray = True
                self.tray.icon.showMessage("octop2p is still running",
                                           "Use the tray icon to open it again or to quit.")
            return
        event.accept()
        if not self.quitting:
            self.request_quit()
