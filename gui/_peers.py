"""The peers tab: the nodes this one sees, and the swarm they share.

A table model over the ``peers`` replies of the node API (id, address, cores, donating,
trusted), and buttons for the swarm dialogs (create a swarm and show its join code, join
one by pasting a code).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (
    QPushButton,
    QStackedWidget,
    QWidget,
)

from ._bridge import NodeBridge
from ._dialogs import CreateSwarmDialog, JoinSwarmDialog, ShowCodeDialog
from ._icons import tinted
from ._store import short_id
from ._widgets import EmptyState, PillDelegate, RowsModel, tab_page, table_view

_Index = QModelIndex | QPersistentModelIndex


class PeersModel(RowsModel):
    """One row per peer: connected peers first, then those only seen on the LAN."""

    COLUMNS = ("Name", "ID", "Address", "Cores", "Donating", "Trusted")
    ID_ROLE = Qt.ItemDataRole.UserRole + 1

    def set_peers(self, peers: list[dict[str, Any]]) -> None:
        """Replace the rows."""
        self.beginResetModel()
        self.rows = sorted(peers, key=lambda p: (not p.get("connected", True),
                                                 (p.get("name") or "").lower(), p["id"]))
        self.endResetModel()

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        peer = self.rows[index.row()]
        column = self.COLUMNS[index.column()]
        if role == self.ID_ROLE:
            return peer["id"]
        if role == Qt.ItemDataRole.DisplayRole:
            return {
                "Name": peer.get("name") or "—",
                "ID": short_id(peer["id"]),
                "Address": peer.get("address", ""),
                "Cores": str(peer.get("cores", "")),
                "Donating": "donating" if peer.get("donating") else "not donating",
                "Trusted": "quarantined" if peer.get("quarantined")
                else "trusted" if peer.get("trusted") else "not verified",
            }[column]
        if role == PillDelegate.KIND_ROLE:
            if column == "Donating":
                return "ok" if peer.get("donating") else "muted"
            if column == "Trusted":
                if peer.get("quarantined"):
                    return "error"
                return "ok" if peer.get("trusted") else "warn"
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == "ID":
                return peer["id"]
            if column == "Trusted" and peer.get("quarantined"):
                return (f"Quarantined: {peer.get('reason', '')}. It gets no work from this "
                        "node; `octop2p peers --forgive ID` lifts it")
            if column == "Trusted":
                return ("Proved membership of your swarm in the handshake" if peer.get("trusted")
                        else "Seen on the LAN only: not connected, nothing proved")
        if role == Qt.ItemDataRole.TextAlignmentRole and column == "Cores":
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.FontRole and column == "ID":
            return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        return None


class PeersPanel(QWidget):
    """The peers tab (see the module docstring)."""

    def __init__(self, bridge: NodeBridge, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        layout, top, self.summary = tab_page(self, "Peers")
        self.show_code = QPushButton("Join code")
        self.show_code.setToolTip("Show this swarm's join code, to invite someone")
        self.create_button = QPushButton("Create swarm…")
        self.join = QPushButton("Join swarm…")
        for button, name in ((self.show_code, "key"), (self.create_button, "plus"),
                             (self.join, "link")):
            tinted(button, name)
        for button in (self.show_code, self.create_button, self.join):
            top.addWidget(button, 0, Qt.AlignmentFlag.AlignBottom)

        self.model = PeersModel()
        self.table = table_view(self.model)
        pills = PillDelegate(self.table)
        for column in ("Donating", "Trusted"):
            self.table.setItemDelegateForColumn(PeersModel.COLUMNS.index(column), pills)

        self.empty = EmptyState("peers", "", "")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.empty)
        self.stack.addWidget(self.table)
        layout.addWidget(self.stack, 1)

        self.show_code.clicked.connect(self._show_code)
        self.create_button.clicked.connect(self._create)
        self.join.clicked.connect(self._join)
        bridge.peers_changed.connect(self.show_peers)
        bridge.info_changed.connect(lambda _info: self.show_peers(bridge.peers))
        self.show_peers([])

    def show_peers(self, peers: list[dict[str, Any]]) -> None:
        """Redraw the table and the summary line."""
        self.model.set_peers(peers)
        swarm = self.bridge.info.get("swarm")
        connected = sum(1 for p in peers if p.get("connected", True))
        seen = len(peers) - connected
        if swarm:
            parts = [f"Swarm {swarm[:8]}", f"{connected} connected"]
            if seen:
                parts.append(f"{seen} more seen on the LAN")
            self.summary.setText(" · ".join(parts))
        else:
            self.summary.setText("Not in a swarm yet: this computer works alone")
        self.show_code.setEnabled(bool(swarm))
        if peers:
            self.stack.setCurrentWidget(self.table)
            return
        if swarm:
            self.empty.set_text("No peers yet", "Peers of your swarm on this network show up "
                                "here by themselves. Invite someone with the join code.")
        else:
            self.empty.set_text("Not in a swarm", "Create a swarm and give its join code to "
                                "the people whose computers should work together, or join "
                                "theirs with the code they give you.")
        self.stack.setCurrentWidget(self.empty)

    def _show_code(self) -> None:
        code = self.bridge.swarm_code()
        if code:
            ShowCodeDialog(code, self).exec()

    def _create(self) -> None:
        CreateSwarmDialog(self.bridge, self).exec()

    def _join(self) -> None:
        JoinSwarmDialog(self.bridge, self).exec()
