"""Small reusable widgets: a toggle switch, cards, status badges and dots, a toast.

They draw with the palette and `_theme.status_color`, so they follow the colour scheme.
"""

from __future__ import annotations

import html
from typing import Any

from PySide6.QtCore import (
    Property,
    QAbstractTableModel,
    QEasingCurve,
    QModelIndex,
    QPersistentModelIndex,
    QPointF,
    QPropertyAnimation,
    QRectF,
    QSize,
    Qt,
    QTimer,
)
from PySide6.QtGui import QColor, QFont, QPainter, QPainterPath, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QApplication,
    QFrame,
    QGraphicsOpacityEffect,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QSizePolicy,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from ._theme import accent, is_dark, status_color

_Index = QModelIndex | QPersistentModelIndex


class ToggleSwitch(QAbstractButton):
    """An on/off switch (a checkable button drawn as a sliding knob)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setCheckable(True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self._offset = 0.0
        self._animation = QPropertyAnimation(self, b"offset", self)
        self._animation.setDuration(140)
        self._animation.setEasingCurve(QEasingCurve.Type.OutCubic)
        self.toggled.connect(self._slide)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(52, 28)

    def _get_offset(self) -> float:
        return self._offset

    def _set_offset(self, value: float) -> None:
        self._offset = value
        self.update()

    offset = Property(float, _get_offset, _set_offset)

    def _slide(self, checked: bool) -> None:
        self._animation.stop()
        self._animation.setStartValue(self._offset)
        self._animation.setEndValue(1.0 if checked else 0.0)
        self._animation.start()

    def setChecked(self, checked: bool) -> None:  # noqa: N802 - Qt's name
        """Set the state without animation when it changes from code."""
        super().setChecked(checked)
        self._animation.stop()
        self._offset = 1.0 if checked else 0.0
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        rect = QRectF(1, 1, self.width() - 2, self.height() - 2)
        radius = rect.height() / 2
        palette = self.palette()
        off = palette.color(QPalette.ColorRole.Mid if not is_dark(palette)
                            else QPalette.ColorRole.Light)
        on = accent(palette)
        track = QColor(
            int(off.red() + (on.red() - off.red()) * self._offset),
            int(off.green() + (on.green() - off.green()) * self._offset),
            int(off.blue() + (on.blue() - off.blue()) * self._offset),
        )
        if not self.isEnabled():
            track.setAlpha(110)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(track)
        painter.drawRoundedRect(rect, radius, radius)
        knob = rect.height() - 6
        x = rect.left() + 3 + (rect.width() - knob - 6) * self._offset
        painter.setBrush(QColor("#ffffff"))
        painter.drawEllipse(QRectF(x, rect.top() + 3, knob, knob))
        if self.hasFocus():
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.setPen(QPen(on, 1.5))
            painter.drawRoundedRect(rect.adjusted(-0.5, -0.5, 0.5, 0.5), radius, radius)


class Card(QFrame):
    """A rounded panel a little lighter (dark scheme) or whiter (light) than the window."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, False)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        dark = is_dark(palette)
        fill = palette.color(QPalette.ColorRole.Base if not dark else QPalette.ColorRole.Button)
        border = palette.color(QPalette.ColorRole.Mid if not dark else QPalette.ColorRole.Light)
        path = QPainterPath()
        path.addRoundedRect(QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), 10, 10)
        painter.fillPath(path, fill)
        painter.setPen(QPen(border, 1))
        painter.drawPath(path)


def paint_pill(painter: QPainter, rect: QRectF, text: str, color: QColor) -> None:
    """A word in a rounded pill tinted ``color`` (badges, table cells)."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    fill = QColor(color)
    fill.setAlpha(40)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(fill)
    painter.drawRoundedRect(rect, rect.height() / 2, rect.height() / 2)
    painter.setPen(color)
    painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
    painter.restore()


class Badge(QLabel):
    """A short status word in a tinted pill: ok, running, warn, error or muted."""

    def __init__(self, text: str = "", kind: str = "muted",
                 parent: QWidget | None = None) -> None:
        super().__init__(text, parent)
        self._kind = kind
        font = self.font()
        font.setPointSizeF(font.pointSizeF() * 0.86)
        font.setWeight(QFont.Weight.DemiBold)
        self.setFont(font)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setContentsMargins(9, 2, 9, 2)
        self.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)

    def set(self, text: str, kind: str) -> None:
        """Change the word and its colour."""
        self._kind = kind
        self.setText(text)
        self.update()

    @property
    def kind(self) -> str:
        """The status kind shown."""
        return self._kind

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setFont(self.font())
        paint_pill(painter, QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5), self.text(),
                   status_color(self._kind, self.palette()))


class StatusDot(QWidget):
    """A small coloured dot for a status kind, with an optional soft halo."""

    def __init__(self, kind: str = "muted", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._kind = kind
        self.setFixedSize(14, 14)

    def set_kind(self, kind: str) -> None:
        """Change the colour."""
        self._kind = kind
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        color = status_color(self._kind, self.palette())
        halo = QColor(color)
        halo.setAlpha(60)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(halo)
        painter.drawEllipse(QPointF(7, 7), 6.5, 6.5)
        painter.setBrush(color)
        painter.drawEllipse(QPointF(7, 7), 4, 4)


def heading(text: str, parent: QWidget | None = None, scale: float = 1.18) -> QLabel:
    """A bold label, a little larger than body text."""
    label = QLabel(text, parent)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * scale)
    font.setWeight(QFont.Weight.DemiBold)
    label.setFont(font)
    return label


def caption(text: str, parent: QWidget | None = None) -> QLabel:
    """A small, dimmed, wrapping label for explanations under a control."""
    label = QLabel(text, parent)
    label.setWordWrap(True)
    font = label.font()
    font.setPointSizeF(font.pointSizeF() * 0.9)
    label.setFont(font)
    label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    return label


class Toast(QLabel):
    """A message that floats over the bottom of its parent for a few seconds.

    The in-window notification, used where the desktop has no tray to show one.
    """

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.setMargin(12)
        self.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self._effect = QGraphicsOpacityEffect(self)
        self.setGraphicsEffect(self._effect)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)
        self._kind = "muted"
        self.hide()

    def show_message(self, title: str, text: str, kind: str = "ok", ms: int = 6000) -> None:
        """Show ``title`` and ``text`` for ``ms`` milliseconds."""
        self._kind = kind
        self.setText(f"<b>{html.escape(title)}</b><br>{html.escape(text)}")
        parent = self.parentWidget()
        assert parent is not None  # made with a parent, see __init__
        width = min(420, parent.width() - 40)
        self.setFixedWidth(width)
        self.adjustSize()
        self.move(parent.width() - width - 20, parent.height() - self.height() - 40)
        self.raise_()
        self.show()
        self._timer.start(ms)

    def paintEvent(self, event: QPaintEvent) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        rect = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        painter.setPen(QPen(status_color(self._kind, palette), 1.2))
        painter.setBrush(palette.color(QPalette.ColorRole.ToolTipBase))
        painter.drawRoundedRect(rect, 10, 10)
        painter.end()
        super().paintEvent(event)


class PillDelegate(QStyledItemDelegate):
    """Paints a cell as a status pill: the model gives the word (DisplayRole) and the
    status kind (``KIND_ROLE``)."""

    KIND_ROLE = Qt.ItemDataRole.UserRole + 7

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: _Index) -> None:
        self.initStyleOption(option, index)
        style = option.widget.style() if option.widget else QApplication.style()
        text, option.text = option.text, ""
        style.drawControl(QStyle.ControlElement.CE_ItemViewItem, option, painter, option.widget)
        kind = index.data(self.KIND_ROLE) or "muted"
        color = status_color(kind, option.palette)
        metrics = option.fontMetrics
        width = metrics.horizontalAdvance(text) + 18
        height = metrics.height() + 4
        rect = QRectF(option.rect.left() + 8, option.rect.center().y() - height / 2 + 0.5,
                      width, height)
        paint_pill(painter, rect, text, color)

    def sizeHint(self, option: QStyleOptionViewItem, index: _Index) -> QSize:  # noqa: N802
        size = super().sizeHint(option, index)
        return QSize(size.width() + 26, max(size.height(), option.fontMetrics.height() + 12))


class EmptyState(QWidget):
    """What a view shows while it has nothing to list: an icon, a title, a hint."""

    def __init__(self, icon_name: str, title: str, text: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.icon_name = icon_name
        layout = QVBoxLayout(self)
        layout.addStretch(1)
        self.picture = QLabel()
        self.picture.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.picture.setFixedHeight(44)
        self.repaint_icon()
        layout.addWidget(self.picture)
        self.title = heading(title, scale=1.15)
        self.title.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.title)
        self.text = caption(text)
        self.text.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.text.setFixedWidth(460)
        # Centred by stretches, not by an alignment flag: a layout item with an alignment
        # ignores heightForWidth, and the wrapped text would be cut to one line.
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.text)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addStretch(2)

    def repaint_icon(self) -> None:
        """Draw the icon in the current scheme's muted colour."""
        from ._icons import icon

        self.picture.setPixmap(icon(self.icon_name, status_color("muted"), 40).pixmap(40, 40))

    def set_text(self, title: str, text: str) -> None:
        """Change what it says."""
        self.title.setText(title)
        self.text.setText(text)


def tab_page(page: QWidget, title: str,
             subtitle: str = "") -> tuple[QVBoxLayout, QHBoxLayout, QLabel]:
    """Lay out a tab: a title row (a heading over a caption, room on the right for
    buttons) above whatever the tab adds. Returns the page's layout, the title row and
    the caption, which the tab keeps up to date."""
    layout = QVBoxLayout(page)
    layout.setContentsMargins(4, 8, 4, 4)
    layout.setSpacing(10)
    row = QHBoxLayout()
    titles = QVBoxLayout()
    titles.setSpacing(2)
    titles.addWidget(heading(title))
    sub = caption(subtitle)
    titles.addWidget(sub)
    row.addLayout(titles, 1)
    layout.addLayout(row)
    return layout, row, sub


class RowsModel(QAbstractTableModel):
    """A flat table of ``rows`` under the headers ``COLUMNS`` (subclasses give ``data``)."""

    COLUMNS: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[Any] = []

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008,N802 - Qt's API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008,N802 - Qt's API
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt's API
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.COLUMNS[section]
        return None


def table_view(model: QAbstractTableModel, stretch: tuple[int, ...] = (0,)) -> QTableView:
    """A read-only table of whole-row selection, airy rows and no grid, for ``model``."""
    table = QTableView()
    table.setModel(model)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    table.setAlternatingRowColors(True)
    table.setShowGrid(False)
    table.setWordWrap(False)
    table.verticalHeader().hide()
    table.verticalHeader().setDefaultSectionSize(34)
    header = table.horizontalHeader()
    header.setHighlightSections(False)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    for column in stretch:
        header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    # A soft selection keeps the coloured pills and bars of the selected row readable.
    table.setStyleSheet(
        "QTableView { border: 1px solid palette(midlight); border-radius: 8px;"
        " selection-background-color: rgba(46, 196, 182, 56);"
        " selection-color: palette(text); }"
        "QHeaderView::section { padding: 6px 8px; border: none;"
        " border-bottom: 1px solid palette(midlight); background: palette(base);"
        " font-weight: 600; }")
    return table
