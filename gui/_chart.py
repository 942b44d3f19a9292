"""Painted charts for the job detail view (PySide6-Essentials has no QtCharts).

`ThroughputChart` draws fragments per second over a job's life as a filled line;
`WorkerBars` draws how many fragments each worker computed. Both only paint the numbers
they are given (`_store.JobView.throughput` makes them).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import (
    QColor,
    QFont,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import QSizePolicy, QWidget

from ._theme import accent, is_dark


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def divisions(top: float) -> int:
    """Grid lines for an axis from 0 to a `nice_ceiling` value, at round steps."""
    leading = top / 10 ** math.floor(math.log10(top)) if top > 0 else 1
    return 4 if round(leading, 3) in (2.0, 4.0) else 5


#: The time axis spans at least this long: a job of a fraction of a second still gets
#: round, distinct ticks (0 s, 0.25 s, ... 1 s).
MIN_SPAN_SECONDS = 1.0


def time_ticks(span: float, most: int = 5) -> list[tuple[float, str]]:
    """Ticks for a time axis from 0 to ``span`` seconds: at most ``most``, at round steps
    of seconds, minutes or hours, each label distinct (``(seconds, label)`` pairs)."""
    span = max(span, MIN_SPAN_SECONDS)
    unit, name = (1.0, "s") if span < 120 else (60.0, "min") if span < 7200 else (3600.0, "h")
    step = nice_ceiling(span / unit / (most - 1))
    ticks, count = [], 0
    while count * step * unit <= span * (1 + 1e-9):
        value = round(count * step, 6)  # 3 * 0.1 is 0.30000000000000004
        ticks.append((value * unit, f"{value:g} {name}"))
        count += 1
    return ticks


def _small_font(widget: QWidget) -> QFont:
    font = QFont(widget.font())
    font.setPointSizeF(font.pointSizeF() * 0.85)
    return font


def _grid_color(palette: QPalette) -> QColor:
    color = QColor(palette.color(QPalette.ColorRole.WindowText))
    color.setAlpha(28 if is_dark(palette) else 22)
    return color


def _dim_color(palette: QPalette) -> QColor:
    return palette.color(QPalette.ColorRole.PlaceholderText)


class ThroughputChart(QWidget):
    """Fragments per second against time since the job started."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.points: list[tuple[float, float]] = []
        self.live = False
        self.empty_text = "No fragments done yet"
        self.setMinimumHeight(150)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(420, 180)

    def set_points(self, points: list[tuple[float, float]], live: bool,
                   empty_text: str = "No fragments done yet") -> None:
        """Show ``points`` ((seconds, rate) pairs); ``live`` marks a running job;
        ``empty_text`` is said when there are no points."""
        self.points, self.live, self.empty_text = points, live, empty_text
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        font = _small_font(self)
        painter.setFont(font)
        metrics = painter.fontMetrics()
        top_peak = nice_ceiling(max((rate for _, rate in self.points), default=0) * 1.1)
        steps = divisions(top_peak)
        labels = [f"{top_peak * i / steps:,.0f}/s" if top_peak >= 10
                  else f"{top_peak * i / steps:.1f}/s" for i in range(steps + 1)]
        label_width = max(metrics.horizontalAdvance(text) for text in labels) + 10
        plot = QRectF(label_width, 8, self.width() - label_width - 8,
                      self.height() - metrics.height() - 16)
        if plot.width() < 20 or plot.height() < 20:
            return
        for i, text in enumerate(labels):
            y = plot.bottom() - plot.height() * i / steps
            painter.setPen(QPen(_grid_color(palette), 1))
            painter.drawLine(QPointF(plot.left(), y), QPointF(plot.right(), y))
            painter.setPen(_dim_color(palette))
            painter.drawText(QRectF(0, y - metrics.height() / 2, label_width - 8,
                                    metrics.height()),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, text)
        if not self.points:
            painter.setPen(_dim_color(palette))
            painter.drawText(plot, Qt.AlignmentFlag.AlignCenter, self.empty_text)
            return
        span = max(self.points[-1][0], MIN_SPAN_SECONDS)
        self._time_axis(painter, plot, span)

        def at(t: float, rate: float) -> QPointF:
            return QPointF(plot.left() + plot.width() * t / span,
                           plot.bottom() - plot.height() * min(rate / top_peak, 1.0))

        line = QPainterPath(at(0, self.points[0][1]))
        for t, rate in self.points:
            line.lineTo(at(t, rate))
        area = QPainterPath(line)
        area.lineTo(QPointF(plot.right(), plot.bottom()))
        area.lineTo(QPointF(plot.left(), plot.bottom()))
        area.closeSubpath()
        color = accent(palette)
        gradient = QLinearGradient(plot.topLeft(), plot.bottomLeft())
        top, bottom = QColor(color), QColor(color)
        top.setAlpha(110)
        bottom.setAlpha(8)
        gradient.setColorAt(0, top)
        gradient.setColorAt(1, bottom)
        painter.fillPath(area, gradient)
        painter.setPen(QPen(color, 2))
        painter.drawPath(line)
        if self.live:
            last = at(*self.points[-1])
            painter.setPen(Qt.PenStyle.NoPen)
            halo = QColor(color)
            halo.setAlpha(70)
            painter.setBrush(halo)
            painter.drawEllipse(last, 6, 6)
            painter.setBrush(color)
            painter.drawEllipse(last, 3, 3)


    def _time_axis(self, painter: QPainter, plot: QRectF, span: float) -> None:
        """Round time ticks under ``plot``, which spans ``span`` seconds."""
        metrics = painter.fontMetrics()
        painter.setPen(_dim_color(self.palette()))
        for seconds, text in time_ticks(span):
            x = plot.left() + plot.width() * seconds / span
            width = metrics.horizontalAdvance(text) + 4
            box = QRectF(x - width / 2, plot.bottom() + 4, width, metrics.height())
            if box.left() < plot.left():
                box.moveLeft(plot.left())
            if box.right() > plot.right():
                box.moveRight(plot.right())
            painter.setPen(QPen(_grid_color(self.palette()), 1))
            painter.drawLine(QPointF(x, plot.bottom()), QPointF(x, plot.bottom() + 3))
            painter.setPen(_dim_color(self.palette()))
            painter.drawText(box, Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, text)


class WorkerBars(QWidget):
    """Fragments computed per worker, as labelled horizontal bars."""

    ROW = 30

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.rows: list[tuple[str, int]] = []
        self.setMinimumWidth(220)

    def set_rows(self, rows: list[tuple[str, int]]) -> None:
        """``rows``: (worker label, fragments) pairs, largest first."""
        self.rows = rows
        self.setMinimumHeight(max(1, len(rows)) * self.ROW + 4)
        self.update()

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(260, max(1, len(self.rows)) * self.ROW + 4)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        if not self.rows:
            painter.setPen(_dim_color(palette))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
                             "No worker has reported yet")
            return
        total = sum(count for _, count in self.rows) or 1
        small = _small_font(self)
        color = accent(palette)
        for i, (label, count) in enumerate(self.rows):
            y = i * self.ROW
            painter.setFont(self.font())
            painter.setPen(palette.color(QPalette.ColorRole.WindowText))
            text_rect = QRectF(0, y, self.width(), 16)
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                             label)
            painter.setFont(small)
            painter.setPen(_dim_color(palette))
            painter.drawText(text_rect, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                             f"{count:,} · {100 * count / total:.0f} %")
            track = QRectF(0, y + 19, self.width(), 6)
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(_grid_color(palette))
            painter.drawRoundedRect(track, 3, 3)
            fill = QRectF(track)
            fill.setWidth(max(6.0, track.width() * count / total))
            painter.setBrush(color)
            painter.drawRoundedRect(fill, 3, 3)
