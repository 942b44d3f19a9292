"""Light and dark appearance: follow the system, fall back to Fusion with our palettes.

Qt reports the desktop's colour scheme (``QStyleHints.colorScheme``). Where the desktop
is dark and its style already paints dark, the app keeps the native look. Where it is
dark but the style cannot paint dark (Fusion without a platform theme: many window
managers, Xvfb, offscreen), the app switches to Fusion with a dark palette of its own;
where no native style exists at all, Fusion with a light palette. ``gui.toml``'s
``theme`` (system, dark, light) or ``OCTOP2P_THEME`` force one.

Widgets take their colours from the palette, and the status colours here from
:func:`status_color`, so every view follows a change of scheme at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QStyleFactory

log = logging.getLogger(__name__)

ACCENT_DARK = QColor("#2ec4b6")
ACCENT_LIGHT = QColor("#0e8f83")

# Status colours (dark scheme, light scheme): calm for normal states, warm for trouble.
_STATUS = {
    "ok": ("#4cc38a", "#1f8a52"),
    "running": ("#5aa9ff", "#1f6fd1"),
    "warn": ("#f0b44c", "#b7791f"),
    "error": ("#f26d6d", "#c53030"),
    "muted": ("#8b93a1", "#6b7280"),
}


def is_dark(palette: QPalette | None = None) -> bool:
    """True if ``palette`` (default: the application's) paints light text on dark."""
    palette = palette or QGuiApplication.palette()
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def status_color(kind: str, palette: QPalette | None = None) -> QColor:
    """The colour for a status (ok, running, warn, error, muted) in the current scheme."""
    dark, light = _STATUS.get(kind, _STATUS["muted"])
    return QColor(dark if is_dark(palette) else light)


def accent(palette: QPalette | None = None) -> QColor:
    """The app's accent colour for the current scheme."""
    return QColor(ACCENT_DARK if is_dark(palette) else ACCENT_LIGHT)


def _palette(roles: dict[QPalette.ColorRole, QColor], dim: QColor) -> QPalette:
    """A palette of ``roles``, with ``dim`` text where a control is disabled."""
    p = QPalette()
    for role, color in roles.items():
        p.setColor(role, color)
    for role in (QPalette.ColorRole.WindowText, QPalette.ColorRole.Text,
                 QPalette.ColorRole.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, dim)
    return p


def dark_palette() -> QPalette:
    """Fusion's dark palette, as the app draws it (the fallback for dark desktops)."""
    window, base, alt = QColor("#1d2026"), QColor("#15171c"), QColor("#1a1d22")
    text, dim = QColor("#e4e7ec"), QColor("#7d8590")
    button = QColor("#272b33")
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: alt,
        QPalette.ColorRole.ToolTipBase: QColor("#2b3038"),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: dim,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: button,
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor("#ff6b6b"),
        QPalette.ColorRole.Light: QColor("#353a44"),
        QPalette.ColorRole.Midlight: QColor("#2d323b"),
        QPalette.ColorRole.Mid: QColor("#23272e"),
        QPalette.ColorRole.Dark: QColor("#101216"),
        QPalette.ColorRole.Shadow: QColor("#000000"),
        QPalette.ColorRole.Highlight: QColor("#1f8f84"),
        QPalette.ColorRole.HighlightedText: QColor("#ffffff"),
        QPalette.ColorRole.Link: ACCENT_DARK,
        QPalette.ColorRole.LinkVisited: QColor("#7fb8b2"),
    }
    p = _palette(roles, dim)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Base, window)
    p.setColor(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Button, QColor("#22262d"))
    return p


def light_palette() -> QPalette:
    """A light Fusion palette with the app's accent."""
    window, base = QColor("#f4f5f7"), QColor("#ffffff")
    text, dim = QColor("#1c2128"), QColor("#8a929c")
    roles = {
        QPalette.ColorRole.Window: window,
        QPalette.ColorRole.WindowText: text,
        QPalette.ColorRole.Base: base,
        QPalette.ColorRole.AlternateBase: QColor("#f7f8fa"),
        QPalette.ColorRole.ToolTipBase: QColor("#ffffff"),
        QPalette.ColorRole.ToolTipText: text,
        QPalette.ColorRole.PlaceholderText: dim,
        QPalette.ColorRole.Text: text,
        QPalette.ColorRole.Button: QColor("#fbfbfc"),
        QPalette.ColorRole.ButtonText: text,
        QPalette.ColorRole.BrightText: QColor("#c53030"),
        QPalette.ColorRole.Light: QColor("#ffffff"),
        QPalette.ColorRole.Midlight: QColor("#eceef1"),
        QPalette.ColorRole.Mid: QColor("#d5d9de"),
        QPalette.ColorRole.Dark: QColor("#b4bac2"),
        QPalette.ColorRole.Shadow: QColor("#8a929c"),
        QPalette.ColorRole.Highlight: QColor("#14a394"),
        QPalette.ColorRole.HighlightedText: QColor("#ffffff"),
        QPalette.ColorRole.Link: ACCENT_LIGHT,
        QPalette.ColorRole.LinkVisited: QColor("#3d6f6a"),
    }
    return _palette(roles, dim)


class ThemeFollower:
    """Applies the chosen appearance now and again whenever the desktop's scheme changes."""

    def __init__(self, app: QApplication, preference: str = "system",
                 on_change: Callable[[], None] | None = None) -> None:
        self.app = app
        self.on_change = on_change  # called after each apply (icons are redrawn there)
        self.preference = os.environ.get("OCTOP2P_THEME") or preference
        self.native_style = app.style().name().lower()
        self.native_palette = QPalette(app.palette())
        app.styleHints().colorSchemeChanged.connect(lambda _scheme: self.apply())

    def wanted(self) -> str:
        """'dark' or 'light': the preference, or the desktop's scheme."""
        if self.preference in ("dark", "light"):
            return self.preference
        scheme = self.app.styleHints().colorScheme()
        return "dark" if scheme == Qt.ColorScheme.Dark else "light"

    def apply(self) -> str:
        """Set style and palette; returns what was applied (for the log and tests)."""
        wanted = self.wanted()
        native_matches = is_dark(self.native_palette) == (wanted == "dark")
        if self.preference == "system" and native_matches and self.native_style != "fusion":
            applied = f"native {self.native_style} ({wanted})"
            self.app.setStyle(QStyleFactory.create(self.native_style))
            self.app.setPalette(self.native_palette)
        else:
            # The fallback: Fusion paints any palette well, so a dark desktop whose style
            # cannot paint dark still gets a proper dark app.
            self.app.setStyle(QStyleFactory.create("Fusion"))
            self.app.setPalette(dark_palette() if wanted == "dark" else light_palette())
            applied = f"fusion ({wanted})"
        log.debug("appearance: %s", applied)
        if self.on_change is not None:
            self.on_change()
        return applied
