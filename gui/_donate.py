"""The donate panel: the owner's consent, always visible at the side of the window.

It shows the owner's choices (on/off, cores, CPU share, "only when I'm away", "pause on
battery"), what the node does now and why, and what runs on this machine for others.
Every change goes to `NodeBridge.set_donation`; the panel redraws from the bridge's
``donation_changed`` and ``running_changed`` signals, never from its own state.
"""

from __future__ import annotations

import time
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ._bridge import DonationView, NodeBridge
from ._power import effective_cores
from ._store import peer_label
from ._widgets import Card, StatusDot, ToggleSwitch, caption, heading


class DonatePanel(Card):
    """See the module docstring."""

    def __init__(self, bridge: NodeBridge, max_cores: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setMinimumWidth(300)
        self.setMaximumWidth(360)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(18, 16, 18, 16)
        layout.setSpacing(10)
        self._add_switch(layout)
        layout.addWidget(_rule())
        self._add_cores(layout, max_cores)
        self._add_conditions(layout)
        layout.addWidget(_rule())
        self._add_running(layout)

        self.switch.toggled.connect(lambda on: bridge.set_donation(donate=on))
        self.cores.valueChanged.connect(lambda n: bridge.set_donation(cores=n))
        self.cpu.valueChanged.connect(self._cpu_moved)
        self.cpu.sliderReleased.connect(lambda: bridge.set_donation(cpu_percent=self.cpu.value()))
        self.idle_only.toggled.connect(lambda on: bridge.set_donation(idle_only=on))
        self.idle_minutes.valueChanged.connect(lambda n: bridge.set_donation(idle_minutes=n))
        self.battery.toggled.connect(lambda on: bridge.set_donation(pause_on_battery=on))
        bridge.donation_changed.connect(self.show_donation)
        bridge.running_changed.connect(self._show_running)
        bridge.peers_changed.connect(lambda _peers: self._show_running(bridge.running))
        self._set_enabled(False)

    def _add_switch(self, layout: QVBoxLayout) -> None:
        """The on/off switch, what the node does now, and the node's refusal if any."""
        top = QHBoxLayout()
        top.addWidget(heading("Donate CPU", scale=1.3))
        top.addStretch(1)
        self.switch = ToggleSwitch()
        self.switch.setAccessibleName("Donate CPU")
        self.switch.setToolTip("Let your swarm run jobs on this computer, inside the sandbox")
        top.addWidget(self.switch)
        layout.addLayout(top)

        status = QHBoxLayout()
        status.setSpacing(8)
        self.dot = StatusDot()
        status.addWidget(self.dot, 0, Qt.AlignmentFlag.AlignTop)
        self.status = QLabel("Connecting to the node…")
        self.status.setWordWrap(True)
        status.addWidget(self.status, 1)
        layout.addLayout(status)
        self.error = caption("")
        self.error.setStyleSheet("color: #e5484d;")
        self.error.hide()
        layout.addWidget(self.error)

    def _add_cores(self, layout: QVBoxLayout, max_cores: int) -> None:
        """Cores and the CPU-time slider, with what the share means in whole cores."""
        cores_row = QHBoxLayout()
        cores_row.addWidget(QLabel("Cores"))
        cores_row.addStretch(1)
        self.cores = QSpinBox()
        self.cores.setRange(1, max_cores)
        self.cores.setSuffix(f" of {max_cores}")
        self.cores.setAccessibleName("Cores to donate")
        cores_row.addWidget(self.cores)
        layout.addLayout(cores_row)

        cpu_row = QHBoxLayout()
        cpu_row.addWidget(QLabel("CPU time"))
        self.cpu = QSlider(Qt.Orientation.Horizontal)
        self.cpu.setRange(10, 100)
        self.cpu.setSingleStep(5)
        self.cpu.setPageStep(10)
        self.cpu.setAccessibleName("CPU time percentage")
        cpu_row.addWidget(self.cpu, 1)
        # The owner's values from the start, also while no node answers.
        self.cpu.setValue(self.bridge.settings.cpu_percent)
        self.cpu_value = QLabel(f"{self.cpu.value()} %")
        self.cpu_value.setMinimumWidth(44)
        self.cpu_value.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        cpu_row.addWidget(self.cpu_value)
        layout.addLayout(cpu_row)
        self.cpu_note = caption("")
        layout.addWidget(self.cpu_note)

    def _add_conditions(self, layout: QVBoxLayout) -> None:
        """The "only when I'm away" and "pause on battery" choices, with what this machine
        can tell of each."""
        idle_row = QHBoxLayout()
        self.idle_only = QCheckBox("Only when I'm away")
        idle_row.addWidget(self.idle_only)
        idle_row.addStretch(1)
        self.idle_minutes = QSpinBox()
        self.idle_minutes.setRange(1, 240)
        self.idle_minutes.setPrefix("after ")
        self.idle_minutes.setSuffix(" min")
        idle_row.addWidget(self.idle_minutes)
        layout.addLayout(idle_row)
        self.idle_note = caption("")
        layout.addWidget(self.idle_note)

        self.battery = QCheckBox("Pause on battery")
        layout.addWidget(self.battery)
        self.battery_note = caption("")
        layout.addWidget(self.battery_note)

    def _add_running(self, layout: QVBoxLayout) -> None:
        """What runs on this machine for others, in a scroll area that takes the rest."""
        layout.addWidget(heading("Running on this machine now", scale=1.05))
        self.running_box = QVBoxLayout()
        self.running_box.setSpacing(8)
        holder = QWidget()
        holder.setLayout(self.running_box)
        scroll = QScrollArea()
        scroll.setWidget(holder)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.viewport().setAutoFillBackground(False)
        holder.setAutoFillBackground(False)
        layout.addWidget(scroll, 1)
        self._show_running([])

    def _cpu_moved(self, value: int) -> None:
        self.cpu_value.setText(f"{value} %")
        if not self.cpu.isSliderDown():
            # Keyboard and wheel changes have no release: apply them as they come.
            self.bridge.set_donation(cpu_percent=value)
        self._explain_cpu(self.cores.value(), value)

    def _explain_cpu(self, cores: int, percent: int) -> None:
        workers = effective_cores(cores, percent)
        plural = "es" if workers != 1 else ""
        self.cpu_note.setText(
            f"Enforced as whole cores: {workers} worker process{plural} at full speed. "
            "Throttling within one core is not enforced.")

    def _set_enabled(self, on: bool) -> None:
        for widget in (self.switch, self.cores, self.cpu, self.idle_only, self.idle_minutes,
                       self.battery):
            widget.setEnabled(on)

    def show_donation(self, view: DonationView) -> None:
        """Redraw from the bridge's state (signals blocked: this is not the owner typing)."""
        s = view.settings
        widgets = (self.switch, self.cores, self.cpu, self.idle_only, self.idle_minutes,
                   self.battery)
        for widget in widgets:
            widget.blockSignals(True)
        try:
            self.switch.setChecked(s.donate)
            self.cores.setValue(s.cores)
            if not self.cpu.isSliderDown():
                self.cpu.setValue(s.cpu_percent)
            self.cpu_value.setText(f"{self.cpu.value()} %")
            self.idle_only.setChecked(s.idle_only)
            self.idle_minutes.setValue(s.idle_minutes)
            self.battery.setChecked(s.pause_on_battery)
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self._set_enabled(self.bridge.handle is not None)
        # Idle detection that this desktop lacks cannot be switched on (it would pause
        # donation for good); if gui.toml has it on, the owner can still switch it off.
        self.idle_only.setEnabled(view.idle_available or s.idle_only)
        self.idle_minutes.setEnabled(view.idle_available and s.idle_only)
        self.idle_note.setText(f"Idle time: {view.idle_source}.")
        self.battery_note.setText(f"Power: {view.power.detail}.")
        self._explain_cpu(s.cores, s.cpu_percent)

        decision = view.decision
        if view.node_donating:
            plural = "s" if view.node_cores != 1 else ""
            self.status.setText(f"Donating {view.node_cores} core{plural} to the swarm")
            self.dot.set_kind("ok")
        elif decision.paused:
            self.status.setText(decision.reason)
            self.dot.set_kind("warn")
        else:
            self.status.setText("Off: this computer runs only your own jobs")
            self.dot.set_kind("muted")
        self.error.setVisible(bool(view.error))
        self.error.setText(f"The node refused: {view.error}" if view.error else "")

    def _show_running(self, running: list[dict[str, Any]]) -> None:
        while self.running_box.count():
            item = self.running_box.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.deleteLater()
        if not running:
            self.running_box.addWidget(caption("Nothing from others runs here."))
        for job in running:
            self.running_box.addWidget(_running_item(job, self.bridge))
        self.running_box.addStretch(1)


def _running_item(job: dict[str, Any], bridge: NodeBridge) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(2)
    name = QLabel(f"<b>{job.get('name') or job['job'][:8]}</b>")
    layout.addWidget(name)
    chief = peer_label(bridge.peers, job.get("chief", ""), str(bridge.info.get("id", "")))
    layout.addWidget(caption(f"Chief: {chief}"))
    fragments = job.get("in_progress") or []
    shown = ", ".join(f"#{n}" for n in fragments[:8]) + (" …" if len(fragments) > 8 else "")
    since = time.strftime("%H:%M", time.localtime(job.get("started") or time.time()))
    layout.addWidget(caption(
        f"In progress: {shown or 'none'} · {job.get('done', 0)} done · since {since}"))
    return box


def _rule() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.HLine)
    line.setFrameShadow(QFrame.Shadow.Plain)
    line.setStyleSheet("color: rgba(128, 128, 128, 60);")
    return line
