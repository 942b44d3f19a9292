"""The jobs tab: every job of the node with a progress bar, and a detail view.

The table model reads `_store.JobBook` (kept by the bridge). The detail view shows the
selected job: state, fragments done, a live throughput chart, the fragments each worker
computed, the error of a failed job, and buttons to cancel it or open its results.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import (
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QRectF,
    QSize,
    Qt,
    QTimer,
)
from PySide6.QtGui import QColor, QFontDatabase, QPainter, QPalette
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStackedWidget,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ._bridge import NodeBridge
from ._chart import ThroughputChart, WorkerBars
from ._icons import tinted
from ._store import JobView, peer_label
from ._theme import accent, status_color
from ._widgets import (
    Badge,
    Card,
    EmptyState,
    PillDelegate,
    RowsModel,
    caption,
    heading,
    tab_page,
    table_view,
)

_Index = QModelIndex | QPersistentModelIndex

WAITING_HINT_SECONDS = 5.0
#: Rows the jobs table shows at the window's default size, and at the least.
TABLE_ROWS, TABLE_MIN_ROWS = 6, 3
STATE_KIND = {"queued": "muted", "running": "running", "finishing": "running", "done": "ok",
              "failed": "error", "cancelled": "warn"}


def resumed_text(kept: int) -> str:
    """What the app says of a job its chief resumed after a restart."""
    return f"resumed after its chief restarted: {kept:,} results kept"


def elapsed(job: JobView, now: float | None = None) -> str:
    """How long the job ran (or has been running): 0:42, 12:03, 1:02:03."""
    if job.started is None:
        return "—"
    seconds = int(max(0.0, (job.finished or now or time.time()) - job.started))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"


def table_height(table: QTableView, rows: int) -> int:
    """The height that shows the header and ``rows`` rows of ``table``."""
    return (table.horizontalHeader().sizeHint().height()
            + rows * table.verticalHeader().defaultSectionSize() + 2 * table.frameWidth())


class JobsModel(RowsModel):
    """One row per job (a `JobView`), newest first."""

    COLUMNS = ("Job", "State", "Progress", "Fragments", "Workers", "Time")
    ID_ROLE = Qt.ItemDataRole.UserRole + 1
    PERCENT_ROLE = Qt.ItemDataRole.UserRole + 2

    @property
    def jobs(self) -> list[JobView]:
        """The jobs shown, top to bottom."""
        return self.rows

    def set_jobs(self, jobs: list[JobView]) -> bool:
        """Show ``jobs``; returns True if rows were added or reordered (a reset)."""
        if [j.id for j in jobs] == [j.id for j in self.rows]:
            self.rows = jobs
            if jobs:
                self.dataChanged.emit(self.index(0, 0),
                                      self.index(len(jobs) - 1, len(self.COLUMNS) - 1))
            return False
        self.beginResetModel()
        self.rows = jobs
        self.endResetModel()
        return True

    def row_of(self, job_id: str) -> int:
        """The row showing ``job_id``, or -1."""
        return next((i for i, j in enumerate(self.rows) if j.id == job_id), -1)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        job = self.rows[index.row()]
        column = self.COLUMNS[index.column()]
        if role == self.ID_ROLE:
            return job.id
        if role == self.PERCENT_ROLE:
            return job.percent
        if role == PillDelegate.KIND_ROLE:
            return STATE_KIND.get(job.state, "muted")
        if role == Qt.ItemDataRole.DisplayRole:
            if column == "Job":
                name = job.name or job.id[:8]
                return f"{name} (resumed)" if job.resumed is not None else name
            if column == "State":
                return job.state
            if column == "Progress":
                return f"{job.percent} %" if job.percent is not None else job.phase
            if column == "Fragments":
                total = job.total if job.total is not None else "?"
                return f"{job.done:,} / {total:,}" if job.total else f"{job.done:,} / {total}"
            if column == "Workers":
                return str(len(job.workers))
            if column == "Time":
                return elapsed(job)
        if role == Qt.ItemDataRole.ToolTipRole and column == "Job":
            return f"{job.name}\njob {job.id}" + (
                f"\n{resumed_text(job.resumed)}" if job.resumed is not None else "")
        if role == Qt.ItemDataRole.TextAlignmentRole and column in ("Fragments", "Workers",
                                                                     "Time"):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None


class ProgressDelegate(QStyledItemDelegate):
    """A slim progress bar with its percentage (or phase, while the total is unknown)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        self.initStyleOption(option, index)
        text, option.text = option.text, ""
        style = option.widget.style() if option.widget else None
        if style is not None:
            style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter,
                              option.widget)
        percent = index.data(JobsModel.PERCENT_ROLE)
        kind = index.data(PillDelegate.KIND_ROLE)
        rect = QRectF(option.rect).adjusted(10, 0, -10, 0)
        bar_width = max(20.0, rect.width() - 52)
        track = QRectF(rect.left(), rect.center().y() - 3, bar_width, 6)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        groove = QColor(option.palette.color(QPalette.ColorRole.WindowText))
        groove.setAlpha(30)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(groove)
        painter.drawRoundedRect(track, 3, 3)
        color = accent(option.palette) if kind in ("running", "ok") else \
            status_color(kind or "muted", option.palette)
        if kind == "ok":
            color = status_color("ok", option.palette)
        painter.setBrush(color)
        if percent is not None:
            fill = QRectF(track)
            fill.setWidth(max(6.0, track.width() * percent / 100))
            painter.drawRoundedRect(fill, 3, 3)
        elif kind == "running":
            # Total unknown (the splitter is still producing): a sliding segment.
            phase = (time.monotonic() % 1.6) / 1.6
            segment = QRectF(track.left() + (track.width() - 40) * phase, track.top(), 40, 6)
            painter.drawRoundedRect(segment, 3, 3)
        painter.setPen(option.palette.color(QPalette.ColorRole.Text))
        painter.drawText(QRectF(track.right() + 8, option.rect.top(), 50, option.rect.height()),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                         text if percent is not None else "")
        painter.restore()

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:  # noqa: N802
        return QSize(180, 34)


class JobDetail(QWidget):
    """The selected job (see the module docstring)."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.job_id: str | None = None
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 6, 0, 0)
        layout.setSpacing(10)

        top = QHBoxLayout()
        self.title = heading("", scale=1.25)
        top.addWidget(self.title)
        self.state = Badge()
        top.addWidget(self.state, 0, Qt.AlignmentFlag.AlignVCenter)
        self.ident = caption("")
        top.addWidget(self.ident, 0, Qt.AlignmentFlag.AlignVCenter)
        top.addStretch(1)
        self.cancel = QPushButton("Cancel")
        self.open = QPushButton("Open results folder")
        tinted(self.cancel, "stop")
        tinted(self.open, "folder")
        top.addWidget(self.cancel)
        top.addWidget(self.open)
        layout.addLayout(top)
        self.facts = QLabel()
        self.facts.setTextFormat(Qt.TextFormat.RichText)
        layout.addWidget(self.facts)

        body = QHBoxLayout()
        body.setSpacing(12)
        chart_card = Card()
        chart_layout = QVBoxLayout(chart_card)
        chart_layout.setContentsMargins(14, 10, 14, 10)
        chart_layout.addWidget(heading("Throughput (fragments per second)", scale=1.0))
        self.chart = ThroughputChart()
        chart_layout.addWidget(self.chart, 1)
        body.addWidget(chart_card, 3)
        workers_card = Card()
        workers_layout = QVBoxLayout(workers_card)
        workers_layout.setContentsMargins(14, 10, 14, 10)
        workers_layout.addWidget(heading("Fragments per worker", scale=1.0))
        self.workers = WorkerBars()
        workers_layout.addWidget(self.workers)
        workers_layout.addStretch(1)
        body.addWidget(workers_card, 2)
        layout.addLayout(body, 1)

        self.error = QPlainTextEdit()
        self.error.setReadOnly(True)
        self.error.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.error.setMaximumHeight(140)
        self.error.hide()
        layout.addWidget(self.error)

        self.cancel.clicked.connect(lambda: self.job_id and bridge.cancel(self.job_id))
        self.open.clicked.connect(lambda: self.job_id and bridge.open_results(self.job_id))

    def show_job(self, job: JobView | None) -> None:
        """Show ``job`` (None: nothing selected)."""
        self.job_id = job.id if job else None
        if job is None:
            return
        self.title.setText(job.name or job.id[:8])
        self.state.set(job.state, STATE_KIND.get(job.state, "muted"))
        self.ident.setText(f"job {job.id[:12]}")
        self.cancel.setEnabled(not job.is_finished)
        self.open.setEnabled(job.state == "done" and (job.has_results or
                                                      job.results_path is not None))
        total = f"{job.total:,}" if job.total is not None else "?"
        points = job.throughput()
        seconds = (job.finished or time.time()) - (job.started or time.time())
        average = job.fragments_done / seconds if seconds > 0 else 0.0
        phase = f" ({job.phase})" if job.phase and job.phase != "fragments" else ""
        done = (f"<b>{job.done:,}</b> of <b>{total}</b> fragments{phase}" if job.total is not None
                else f"<b>{job.done:,}</b> fragments done{phase}, more to come")
        facts = [done,
                 f"time <b>{elapsed(job)}</b>", f"average <b>{average:,.1f}</b>/s"]
        if job.results_path is not None:
            facts.append(f"results in <code>{job.results_path}</code>")
        if job.resumed is not None:
            facts.append(resumed_text(job.resumed))
        text = " &nbsp;·&nbsp; ".join(facts)
        if (not job.is_finished and not job.workers and job.started is not None
                and time.time() - job.started > WAITING_HINT_SECONDS):
            # A chief computes its own jobs only if it may (see the donate panel); else
            # the job waits for a donating peer, and the owner should know why.
            text += ("<br>Waiting for workers: no computer has taken a fragment yet. Peers "
                     "of the swarm take work while they donate.")
        self.facts.setText(text)
        self.chart.set_points(
            points, live=not job.is_finished,
            empty_text=("No history: the job ran while the app was closed" if job.is_finished
                        else "No fragments done yet"))
        self_id = str(self.bridge.info.get("id", ""))
        rows = sorted(((peer_label(self.bridge.peers, worker, self_id), count)
                       for worker, count in job.workers.items()), key=lambda r: -r[1])
        self.workers.set_rows(rows)
        failure = job.state == "failed" and (job.error or job.traceback)
        self.error.setVisible(bool(failure))
        if failure:
            rule = f"Rule: {job.rule}\n" if job.rule else ""
            self.error.setPlainText(f"{rule}{job.error or ''}\n\n{job.traceback or ''}".strip())


class JobsPanel(QWidget):
    """The jobs tab: the table above, the detail of the selected job below."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        layout, _, self.summary = tab_page(self, "Jobs", "Jobs this computer is chief of")

        self.model = JobsModel()
        self.table = table_view(self.model, stretch=(0, 2))
        self.table.setItemDelegateForColumn(JobsModel.COLUMNS.index("Progress"),
                                            ProgressDelegate(self.table))
        self.table.setItemDelegateForColumn(JobsModel.COLUMNS.index("State"),
                                            PillDelegate(self.table))

        self.empty = EmptyState(
            "jobs", "No jobs yet",
            "Submit a job folder or a MapReduce script: this computer becomes its chief "
            "and shares the work with the swarm.")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)

        self.detail = JobDetail(bridge)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.stack)
        self.splitter.addWidget(self.detail)
        self.splitter.setChildrenCollapsible(False)
        # The table keeps a few rows however small the window; at the default size it
        # shows TABLE_ROWS, and the detail (the chart) takes what is left and any growth.
        self.table.setMinimumHeight(table_height(self.table, TABLE_MIN_ROWS))
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([table_height(self.table, TABLE_ROWS), 1000])
        self.detail.hide()
        layout.addWidget(self.splitter, 1)

        self.table.selectionModel().selectionChanged.connect(lambda *_: self._show_selected())
        bridge.jobs_changed.connect(self.refresh)
        bridge.submitted.connect(lambda _path, status: self.select(status["job"]))
        # A running job's chart and clock move even when no event arrives.
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._tick_running)
        self._tick.start()

    def refresh(self) -> None:
        """Redraw from the bridge's job book, keeping the selection."""
        selected = self.selected_id()
        jobs = self.bridge.book.ordered()
        if self.model.set_jobs(jobs) and selected:
            self.select(selected)
        self.stack.setCurrentWidget(self.table if jobs else self.empty)
        running = sum(1 for j in jobs if not j.is_finished)
        self.summary.setText(f"Jobs this computer is chief of · {running} running"
                             if running else "Jobs this computer is chief of")
        if selected is None and jobs:
            self.select(jobs[0].id)
        self._show_selected()

    def selected_id(self) -> str | None:
        """The id of the selected job, if any."""
        rows = self.table.selectionModel().selectedRows()
        return rows[0].data(JobsModel.ID_ROLE) if rows else None

    def select(self, job_id: str) -> None:
        """Select a job's row (once it is in the table)."""
        row = self.model.row_of(job_id)
        if row < 0:
            return
        self.table.selectionModel().select(
            self.model.index(row, 0),
            QItemSelectionModel.SelectionFlag.ClearAndSelect
            | QItemSelectionModel.SelectionFlag.Rows)

    def _show_selected(self) -> None:
        job_id = self.selected_id()
        job = self.bridge.book.jobs.get(job_id) if job_id else None
        self.detail.setVisible(job is not None)
        self.detail.show_job(job)

    def _tick_running(self) -> None:
        if any(not j.is_finished for j in self.model.jobs):
            self.model.set_jobs(self.model.jobs)
            self._show_selected()
