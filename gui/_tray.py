"""The tray icon (where the desktop has a tray) and job notifications.

With a tray: an icon whose menu shows the window, pauses or resumes donating and quits,
and job notifications as tray messages. Without one (many Wayland desktops, offscreen):
no icon, the window stays the way to everything, and notifications appear inside it,
with the taskbar entry flashed if the window is not active.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QApplication, QMenu, QSystemTrayIcon, QWidget

from ._bridge import DonationView, NodeBridge
from ._icons import logo_icon
from ._widgets import Toast

log = logging.getLogger(__name__)


def tray_available() -> bool:
    """True if the desktop shows tray icons."""
    return QSystemTrayIcon.isSystemTrayAvailable()


class Tray(QObject):
    """The tray icon and its menu; only made where :func:`tray_available` is true."""

    show_window = Signal()
    quit_requested = Signal()

    def __init__(self, bridge: NodeBridge, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.icon = QSystemTrayIcon(logo_icon(), self)
        self.icon.setToolTip("octop2p")
        self.menu = QMenu()
        self.open_action = QAction("Show octop2p", self.menu)
        self.pause_action = QAction("Pause donating", self.menu)
        self.quit_action = QAction("Quit", self.menu)
        self.menu.addAction(self.open_action)
        self.menu.addSeparator()
        self.menu.addAction(self.pause_action)
        self.menu.addSeparator()
        self.menu.addAction(self.quit_action)
        self.icon.setContextMenu(self.menu)
        self.open_action.triggered.connect(self.show_window)
        self.quit_action.triggered.connect(self.quit_requested)
        self.pause_action.triggered.connect(self._toggle)
        self.icon.activated.connect(self._activated)
        bridge.donation_changed.connect(self._donation)
        self.icon.show()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason == QSystemTrayIcon.ActivationReason.Trigger:
            self.show_window.emit()

    def _toggle(self) -> None:
        self.bridge.set_donation(donate=not self.bridge.settings.donate)

    def _donation(self, view: DonationView) -> None:
        self.pause_action.setText("Pause donating" if view.settings.donate else "Resume donating")
        self.icon.setIcon(logo_icon(paused=not view.node_donating))
        self.icon.setToolTip(f"octop2p: {view.decision.reason}" if not view.node_donating
                             else f"octop2p: donating {view.node_cores} cores")

    def hide(self) -> None:
        """Take the icon off the tray (at quit)."""
        self.icon.hide()


class Notifier(QObject):
    """Shows job notifications: in the tray if there is one, else inside the window."""

    def __init__(self, window: QWidget, tray: Tray | None) -> None:
        super().__init__(window)
        self.window = window
        self.tray = tray
        self.toast = Toast(window)
        self.shown: list[tuple[str, str]] = []  # (title, message), newest last

    def notify(self, title: str, message: str, kind: str) -> None:
        """Tell the owner that something happened (a job ended)."""
        self.shown.append((title, message))
        del self.shown[:-50]
        log.info("%s: %s", title, message)
        if self.tray is not None and (not self.window.isVisible()
                                      or not self.window.isActiveWindow()):
            icon = (QSystemTrayIcon.MessageIcon.Warning if kind == "failed"
                    else QSystemTrayIcon.MessageIcon.Information)
            self.tray.icon.showMessage(title, message, icon, 8000)
            return
        self.toast.show_message(title, message, "error" if kind == "failed" else
                                "warn" if kind == "cancelled" else "ok")
        if not self.window.isActiveWindow():
            QApplication.alert(self.window, 0)
