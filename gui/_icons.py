"""The app's icons, drawn here so that the package ships no image files.

Line icons are small SVG documents in ``currentColor``, tinted with the palette's text
colour when drawn, so they follow the light or dark scheme. The app logo (a hub and its
eight peers: octo, p2p) is painted with QPainter.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QByteArray, QPointF, QRectF, Qt
from PySide6.QtGui import (
    QAction,
    QBrush,
    QColor,
    QGuiApplication,
    QIcon,
    QLinearGradient,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
    QPixmap,
)
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QAbstractButton, QWidget

_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
    'stroke="{color}" stroke-width="1.8" stroke-linecap="round" stroke-linejoin="round">'
    "{body}</svg>"
)

# Each body is a few strokes on a 24x24 grid.
_BODIES = {
    "submit": '<path d="M12 16V4"/><path d="M7 9l5-5 5 5"/><path d="M4 16v3a1 1 0 0 0 1 1h14'
              'a1 1 0 0 0 1-1v-3"/>',
    "stop": '<rect x="6" y="6" width="12" height="12" rx="2"/>',
    "folder": '<path d="M3 7a2 2 0 0 1 2-2h4l2 2h8a2 2 0 0 1 2 2v8a2 2 0 0 1-2 2H5a2 2 0 0 1'
              '-2-2z"/>',
    "copy": '<rect x="8" y="8" width="12" height="12" rx="2"/><path d="M16 8V6a2 2 0 0 0-2-2'
            'H6a2 2 0 0 0-2 2v8a2 2 0 0 0 2 2h2"/>',
    "plus": '<path d="M12 5v14M5 12h14"/>',
    "link": '<path d="M10 14a4 4 0 0 0 5.7 0l3-3a4 4 0 0 0-5.7-5.7l-1 1"/><path d="M14 10a4 4 '
            '0 0 0-5.7 0l-3 3a4 4 0 0 0 5.7 5.7l1-1"/>',
    "key": '<circle cx="8" cy="15" r="4"/><path d="M11 12l9-9M16 7l3 3M14 9l2 2"/>',
    "jobs": '<rect x="4" y="4" width="16" height="16" rx="2"/><path d="M8 9h8M8 13h8M8 17h5"/>',
    "peers": '<circle cx="12" cy="12" r="2.5"/><circle cx="5" cy="6" r="2"/><circle cx="19" '
             'cy="6" r="2"/><circle cx="5" cy="18" r="2"/><circle cx="19" cy="18" r="2"/><path '
             'd="M6.5 7.5l3.7 3M17.5 7.5l-3.7 3M6.5 16.5l3.7-3M17.5 16.5l-3.7-3"/>',
    "log": '<path d="M5 6h14M5 10h14M5 14h10M5 18h7"/>',
    "cpu": '<rect x="6" y="6" width="12" height="12" rx="2"/><rect x="9.5" y="9.5" width="5" '
           'height="5"/><path d="M9 3v3M15 3v3M9 18v3M15 18v3M3 9h3M3 15h3M18 9h3M18 15h3"/>',
    "pause": '<path d="M9 6v12M15 6v12"/>',
    "play": '<path d="M8 5l11 7-11 7z"/>',
    "check": '<path d="M5 12.5l4.5 4.5L19 7.5"/>',
    "alert": '<path d="M12 4l9 16H3z"/><path d="M12 10v4M12 17.5v.01"/>',
    "file": '<path d="M14 3H7a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h10a2 2 0 0 0 2-2V8z"/><path '
            'd="M14 3v5h5"/>',
    "refresh": '<path d="M20 11a8 8 0 0 0-14.5-4.5L4 8"/><path d="M4 4v4h4"/><path d="M4 13a8 '
               '8 0 0 0 14.5 4.5L20 16"/><path d="M20 20v-4h-4"/>',
}


def icon(name: str, color: QColor | None = None, size: int = 20) -> QIcon:
    """A line icon tinted ``color`` (default: the palette's text colour)."""
    if color is None:
        color = QGuiApplication.palette().color(QPalette.ColorRole.WindowText)
    svg = _SVG.format(color=color.name(), body=_BODIES[name])
    renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
    result = QIcon()
    for scale in (1, 2):
        pixmap = QPixmap(size * scale, size * scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter)
        painter.end()
        pixmap.setDevicePixelRatio(scale)
        result.addPixmap(pixmap)
    return result


_PROPERTY = "octop2pIcon"


def tinted(target: QAbstractButton | QAction, name: str) -> None:
    """Give a button or action the line icon ``name``, redrawn by `retint`."""
    target.setProperty(_PROPERTY, name)
    target.setIcon(icon(name))


def retint(root: QWidget) -> None:
    """Redraw every `tinted` icon under ``root`` in the palette's text colour now
    (after a change between light and dark)."""
    targets: list[QAbstractButton | QAction] = [*root.findChildren(QAbstractButton),
                                                *root.findChildren(QAction)]
    for target in targets:
        name = target.property(_PROPERTY)
        if name:
            target.setIcon(icon(str(name)))


def paint_logo(painter: QPainter, rect: QRectF, *, paused: bool = False) -> None:
    """The app logo in ``rect``: a rounded tile, a hub and its eight peers."""
    painter.save()
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    side = min(rect.width(), rect.height())
    tile = QRectF(rect.center().x() - side / 2, rect.center().y() - side / 2, side, side)
    gradient = QLinearGradient(tile.topLeft(), tile.bottomRight())
    if paused:
        gradient.setColorAt(0, QColor("#8b93a1"))
        gradient.setColorAt(1, QColor("#5b6270"))
    else:
        gradient.setColorAt(0, QColor("#2ec4b6"))
        gradient.setColorAt(1, QColor("#3a6fd8"))
    path = QPainterPath()
    path.addRoundedRect(tile, side * 0.24, side * 0.24)
    painter.fillPath(path, QBrush(gradient))
    center = tile.center()
    ring = side * 0.31
    dot = max(1.2, side * 0.075)
    white = QColor(255, 255, 255, 235)
    painter.setPen(QPen(QColor(255, 255, 255, 150), max(1.0, side * 0.035)))
    points = [QPointF(center.x() + ring * math.cos(math.pi / 4 * i + math.pi / 8),
                      center.y() + ring * math.sin(math.pi / 4 * i + math.pi / 8))
              for i in range(8)]
    for point in points:
        painter.drawLine(center, point)
    painter.setPen(Qt.PenStyle.NoPen)
    painter.setBrush(white)
    for point in points:
        painter.drawEllipse(point, dot, dot)
    painter.drawEllipse(center, dot * 1.7, dot * 1.7)
    painter.restore()


def logo_icon(*, paused: bool = False) -> QIcon:
    """The app logo as a window and tray icon, in the usual sizes."""
    result = QIcon()
    for size in (16, 22, 24, 32, 48, 64, 128, 256):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        paint_logo(painter, QRectF(0, 0, size, size), paused=paused)
        painter.end()
        result.addPixmap(pixmap)
    return result
