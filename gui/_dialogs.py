"""Dialogs: submit a job (with its validation errors), create, join and show a swarm.

The submit dialog asks the bridge to check the chosen job as soon as it is chosen, and
shows a refusal the way the node words it: the rule, the file and line, and the lines
around it. The swarm dialogs show and take join codes; the bridge stores them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ._bridge import NodeBridge
from ._icons import icon
from ._theme import status_color
from ._widgets import Card, caption, heading

CHECK_DELAY_MS = 250  # check the job once typing pauses, not at every key


def _frame(dialog: QDialog, title: str, width: int = 520) -> QVBoxLayout:
    """The dialogs' common frame: window title, width, margins and a heading."""
    dialog.setWindowTitle(title)
    dialog.setMinimumWidth(width)
    layout = QVBoxLayout(dialog)
    layout.setContentsMargins(22, 20, 22, 18)
    layout.setSpacing(10)
    layout.addWidget(heading(title, scale=1.25))
    return layout


class SubmitDialog(QDialog):
    """Choose a script or a package folder, see it checked, submit it."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None,
                 start_dir: str = "") -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.start_dir = start_dir or str(Path.home())
        self.report: dict[str, Any] | None = None
        layout = _frame(self, "Submit a job", 620)
        layout.addWidget(caption(
            "A job is a folder holding Split.py, Process.py and Merge.py, or a MapReduce "
            "script (one .py file). It is checked here before anything runs."))

        row = QHBoxLayout()
        self.path = QLineEdit()
        self.path.setPlaceholderText("Path to a job folder or a .py script")
        self.path.setClearButtonEnabled(True)
        row.addWidget(self.path, 1)
        self.pick_script = QPushButton(icon("file"), "Script…")
        self.pick_folder = QPushButton(icon("folder"), "Folder…")
        row.addWidget(self.pick_script)
        row.addWidget(self.pick_folder)
        layout.addLayout(row)

        self.result_card = Card()
        result_layout = QVBoxLayout(self.result_card)
        result_layout.setContentsMargins(16, 12, 16, 12)
        result_layout.setSpacing(6)
        self.result_title = QLabel()
        self.result_title.setTextFormat(Qt.TextFormat.RichText)
        self.result_title.setWordWrap(True)
        self.result_text = QLabel()
        self.result_text.setWordWrap(True)
        self.result_text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.excerpt = QLabel()
        self.excerpt.setTextFormat(Qt.TextFormat.RichText)
        self.excerpt.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.excerpt.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        for widget in (self.result_title, self.result_text, self.excerpt):
            result_layout.addWidget(widget)
        self.result_card.hide()
        layout.addWidget(self.result_card)
        layout.addStretch(1)

        self.buttons = QDialogButtonBox()
        self.submit_button = self.buttons.addButton("Submit",
                                                    QDialogButtonBox.ButtonRole.AcceptRole)
        self.submit_button.setIcon(icon("submit"))
        self.submit_button.setDefault(True)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.submit_button.setEnabled(False)
        layout.addWidget(self.buttons)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(CHECK_DELAY_MS)
        self._timer.timeout.connect(self._check)
        self.path.textChanged.connect(self._path_changed)
        self.pick_script.clicked.connect(self._choose_script)
        self.pick_folder.clicked.connect(self._choose_folder)
        self.buttons.accepted.connect(self._submit)
        self.buttons.rejected.connect(self.reject)
        bridge.validated.connect(self._validated)
        bridge.submitted.connect(self._submitted)
        bridge.submit_failed.connect(self._failed)

    # --- choosing ------------------------------------------------------------------------

    def set_path(self, path: str) -> None:
        """Choose ``path`` and check it now."""
        self.path.setText(path)
        self._timer.stop()
        self._check()

    def _choose_script(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a MapReduce script",
                                              self.start_dir, "Python scripts (*.py)")
        if path:
            self.set_path(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a job folder", self.start_dir)
        if path:
            self.set_path(path)

    def _path_changed(self, _text: str) -> None:
        self.report = None
        self.submit_button.setEnabled(False)
        self._timer.start()

    def _check(self) -> None:
        text = self.path.text().strip()
        if not text:
            self.result_card.hide()
            return
        self._show("Checking…", "", "muted")
        self.bridge.validate(str(Path(text).expanduser()))

    def _current(self, path: str) -> bool:
        text = self.path.text().strip()
        return bool(text) and Path(text).expanduser().resolve() == Path(path).resolve()

    # --- results -------------------------------------------------------------------------

    def _validated(self, path: str, report: dict[str, Any]) -> None:
        if not self._current(path):
            return  # an answer about a path the owner has since changed
        self.report = report
        if report["ok"]:
            kind = ("a split / process / merge package" if report["kind"] == "package"
                    else "a MapReduce script")
            files = len(report["files"])
            text = f"{kind}, {files} file{'s' if files != 1 else ''}"
            for warning in report["warnings"]:
                text += f"\nWarning: {warning}"
            self._show(f"Ready: {html.escape(report['name'])}", text, "ok")
            self.submit_button.setEnabled(True)
        else:
            self._show_refusal(report)

    def _show_refusal(self, report: dict[str, Any]) -> None:
        self.submit_button.setEnabled(False)
        where = ""
        if report.get("file"):
            where = Path(report["file"]).name if Path(report["file"]).is_absolute() \
                else report["file"]
            if report.get("line"):
                where += f", line {report['line']}"
        title = "Refused"
        if report.get("rule"):
            title += f" — rule: {html.escape(report['rule'])}"
        text = report.get("detail") or report.get("message", "")
        self._show(title, f"{where}\n{text}" if where else text, "error",
                   report.get("excerpt") or [], report.get("line"))

    def _show(self, title: str, text: str, kind: str,
              excerpt: list[tuple[int, str]] | None = None, line: int | None = None) -> None:
        color = status_color(kind, self.palette()).name()
        self.result_title.setText(f'<span style="color:{color}; font-weight:600">{title}</span>')
        self.result_text.setText(text)
        self.result_text.setVisible(bool(text))
        self.excerpt.setVisible(bool(excerpt))
        if excerpt:
            rows = []
            dim = status_color("muted", self.palette()).name()
            for number, source in excerpt:
                code = html.escape(source).replace(" ", "&nbsp;")
                if number == line:
                    rows.append(f'<span style="color:{color}; font-weight:600">&#9656;&nbsp;'
                                f'{number:>3}&nbsp;&nbsp;{code}</span>')
                else:
                    rows.append(f'<span style="color:{dim}">&nbsp;&nbsp;{number:>3}</span>'
                                f'&nbsp;&nbsp;{code}')
            self.excerpt.setText("<br>".join(rows))
        self.result_card.show()
        self.adjustSize()  # the card grew: let the dialog grow with it, not clip it

    @property
    def error_text(self) -> str:
        """What the dialog shows of a refusal (empty when there is none)."""
        if self.report is None or self.report.get("ok"):
            return ""
        return f"{self.result_title.text()}\n{self.result_text.text()}"

    # --- submitting ----------------------------------------------------------------------

    def _submit(self) -> None:
        if not self.report or not self.report.get("ok"):
            return
        self.submit_button.setEnabled(False)
        self._show("Submitting…", "", "running")
        self.bridge.submit(self.path.text().strip())

    def _submitted(self, path: str, status: dict[str, Any]) -> None:
        if self._current(path):
            self.accept()

    def _failed(self, path: str, report: dict[str, Any]) -> None:
        if self._current(path):
            self.report = report
            self._show_refusal(report)


class _CodeBox(QWidget):
    """A join code in a selectable monospace box, with a Copy button."""

    def __init__(self, code: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.text = QPlainTextEdit(code)
        self.text.setReadOnly(True)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setFixedHeight(self.text.fontMetrics().height() * 4 + 16)
        self.text.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        layout.addWidget(self.text)
        row = QHBoxLayout()
        row.addStretch(1)
        self.copy = QPushButton(icon("copy"), "Copy")
        self.copy.clicked.connect(self._copy)
        row.addWidget(self.copy)
        layout.addLayout(row)

    def _copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text.toPlainText())
        self.copy.setText("Copied")
        QTimer.singleShot(1500, lambda: self.copy.setText("Copy"))


_INVITE = ("Give this code only to people whose computers may run your jobs, and whose "
           "jobs yours may run. Anyone who has it can join the swarm.")


class ShowCodeDialog(QDialog):
    """This swarm's join code, to invite someone."""

    def __init__(self, code: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = _frame(self, "This swarm's join code")
        layout.addWidget(caption(_INVITE))
        self.code = _CodeBox(code)
        layout.addWidget(self.code)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


class CreateSwarmDialog(QDialog):
    """Make a new swarm and show its join code."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.layout_ = _frame(self, "Create a swarm")
        explain = ("A swarm is the group of computers that work for each other. Creating one "
                   "gives you a join code for the others.")
        if bridge.swarm_code():
            explain += ("\n\nThis computer is already in a swarm. A new swarm replaces it: "
                        "the old swarm's members will no longer work with this computer.")
        self.explain = caption(explain)
        self.layout_.addWidget(self.explain)
        self.buttons = QDialogButtonBox()
        self.create_button = self.buttons.addButton("Create swarm",
                                             QDialogButtonBox.ButtonRole.AcceptRole)
        self.create_button.setIcon(icon("plus"))
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self._create)
        self.buttons.rejected.connect(self.reject)
        self.layout_.addWidget(self.buttons)
        self.code: _CodeBox | None = None

    def _create(self) -> None:
        code = self.bridge.create_swarm()
        self.explain.setText(_INVITE + _restart_note(self.bridge))
        self.code = _CodeBox(code)
        self.layout_.insertWidget(2, self.code)
        self.buttons.clear()
        self.buttons.addButton(QDialogButtonBox.StandardButton.Close)


class JoinSwarmDialog(QDialog):
    """Join a swarm by pasting its join code."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        layout = _frame(self, "Join a swarm")
        explain = "Paste the join code that a member of the swarm gave you."
        if bridge.swarm_code():
            explain += " It replaces the swarm this computer is in now."
        layout.addWidget(caption(explain))
        self.code = QPlainTextEdit()
        self.code.setPlaceholderText("OCTO-…")
        self.code.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.code.setFixedHeight(self.code.fontMetrics().height() * 4 + 16)
        layout.addWidget(self.code)
        self.problem = caption("")
        layout.addWidget(self.problem)
        self.buttons = QDialogButtonBox()
        self.join = self.buttons.addButton("Join", QDialogButtonBox.ButtonRole.AcceptRole)
        self.join.setIcon(icon("link"))
        self.join.setEnabled(False)
        self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        layout.addWidget(self.buttons)
        self.code.textChanged.connect(self._changed)
        self.buttons.accepted.connect(self._join)
        self.buttons.rejected.connect(self.reject)

    def _changed(self) -> None:
        text = self.code.toPlainText().strip()
        problem = self.bridge.check_code(text) if text else None
        self.problem.setText(problem or "")
        self.problem.setStyleSheet(
            f"color: {status_color('error', self.palette()).name()};" if problem else "")
        self.join.setEnabled(bool(text) and problem is None)

    def _join(self) -> None:
        self.bridge.join_swarm(self.code.toPlainText())
        note = _restart_note(self.bridge).strip()
        if note:
            self.problem.setText(note)
            self.buttons.clear()
            self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
            return
        self.accept()


def _restart_note(bridge: NodeBridge) -> str:
    if bridge.needs_restart_for_swarm:
        return ("\n\nThe node runs in another process (`octop2p node`): restart it so that "
                "it uses this swarm.")
    return ""
