"""The log view: the node's log records and events, as lines one can filter and copy.

Two sources feed it: Python log records (the node's own log, when it runs in the app;
`QtLogHandler` is installed by the entry point) and the node's events (peers coming and
going, jobs, output), which the bridge passes on from either kind of node.
"""

from __future__ import annotations

import html
import logging
import time
from collections import deque
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QFontDatabase, QTextCursor
from PySide6.QtWidgets import (
    QComboBox,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from ._bridge import NodeBridge
from ._store import short_id
from ._theme import status_color
from ._widgets import tab_page

MAX_LINES = 5000
LEVELS = (("Everything", logging.DEBUG), ("Information", logging.INFO),
          ("Warnings and errors", logging.WARNING))


class QtLogHandler(logging.Handler):
    """A logging handler that passes records to the GUI thread as a Qt signal.

    Records may come from any thread (zeroconf's, trio's worker threads); the signal
    is queued to the thread the emitter lives in.
    """

    class _Emitter(QObject):
        record = Signal(int, str, str, float)  # level, logger name, message, time

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.emitter = self._Emitter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({record.exc_info[1]!r})"
            self.emitter.record.emit(record.levelno, record.name, message, record.created)
        except Exception:  # noqa: BLE001 - logging must never raise into its caller
            self.handleError(record)


def format_event(event: dict[str, Any]) -> tuple[int, str] | None:
    """A node event as a log line (level, text), or None for events too frequent to log."""
    kind = event.get("event")
    job = f"{event.get('name') or ''} ({str(event.get('job', ''))[:8]})".strip()
    if kind == "job":
        state = event.get("state", "")
        text = f"job {job}: {state}"
        if event.get("error"):
            text += f": {event['error']}"
        return (logging.WARNING if state == "failed" else logging.INFO), text
    if kind == "output":
        text = str(event.get("text", "")).rstrip()
        return (logging.INFO, f"{event.get('where', 'output')}: {text}") if text else None
    if kind == "worker":
        verb = "joined" if event.get("joined") else "left"
        return logging.INFO, f"worker {short_id(str(event.get('worker', '')))} {verb} job " \
                             f"{str(event.get('job', ''))[:8]}"
    if kind == "peer":
        verb = "connected" if event.get("up") else "disconnected"
        return logging.INFO, f"peer {short_id(str(event.get('id', '')))} {verb} " \
                             f"({event.get('address', '?')})"
    if kind == "donating":
        on = event.get("on")
        return logging.INFO, (f"donation on, {event.get('cores')} cores" if on
                              else "donation off")
    if kind == "blocked":  # a chief whose jobs kept breaking sandbox rules here
        return logging.WARNING, f"blocked chief {short_id(str(event.get('chief', '')))}: " \
                                f"{event.get('reason', '')}"
    if kind == "working":
        chief = short_id(str(event.get("chief", "")))
        if event.get("running"):
            return logging.INFO, f"working on {job} for {chief}"
        return logging.INFO, f"stopped working on {job} for {chief}"
    return None


class LogView(QWidget):
    """The log tab."""

    def __init__(self, bridge: NodeBridge, handler: QtLogHandler | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lines: deque[tuple[int, float, str, str]] = deque(maxlen=MAX_LINES)
        layout, top, _ = tab_page(self, "Log", "What the node did and said, newest last")
        self.level = QComboBox()
        for label, level in LEVELS:
            self.level.addItem(label, level)
        self.level.setCurrentIndex(1)
        top.addWidget(self.level)
        self.clear = QPushButton("Clear")
        top.addWidget(self.clear)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(MAX_LINES)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        layout.addWidget(self.text, 1)
        self.level.currentIndexChanged.connect(lambda _i: self._render())
        self.clear.clicked.connect(self._clear)
        bridge.node_event.connect(self._event)
        if handler is not None:
            handler.emitter.record.connect(self.add)

    def _event(self, event: dict[str, Any]) -> None:
        line = format_event(event)
        if line is not None:
            self.add(line[0], "node", line[1], float(event.get("time") or time.time()))

    def add(self, level: int, source: str, text: str, when: float) -> None:
        """Add one line (and show it if the filter lets it through)."""
        source = source.rsplit(".", 1)[-1].lstrip("_")  # octop2p.net._node -> node
        entry = (level, when, source, text)
        self.lines.append(entry)
        if level >= self.level.currentData():
            self._append(entry)

    def _append(self, entry: tuple[int, float, str, str]) -> None:
        level, when, source, text = entry
        stamp = time.strftime("%H:%M:%S", time.localtime(when))
        kind = "error" if level >= logging.ERROR else "warn" if level >= logging.WARNING \
            else "muted"
        dim = status_color("muted", self.palette()).name()
        body = html.escape(text).replace("\n", "<br>")
        if level >= logging.WARNING:
            body = f'<span style="color:{status_color(kind, self.palette()).name()}">{body}</span>'
        self.text.appendHtml(f'<span style="color:{dim}">{stamp}&nbsp;&nbsp;'
                             f'{html.escape(source):<10}</span>&nbsp;{body}')
        self.text.moveCursor(QTextCursor.MoveOperation.End)

    def _render(self) -> None:
        self.text.clear()
        threshold = self.level.currentData()
        for entry in self.lines:
            if entry[0] >= threshold:
                self._append(entry)

    def _clear(self) -> None:
        self.lines.clear()
        self.text.clear()

    def plain_text(self) -> str:
        """What the view shows, as plain text."""
        return self.text.toPlainText()
