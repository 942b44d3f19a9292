"""The app's donation policy: pause on battery, donate only while the owner is away.

The node knows only "donate on/off, N cores". The conditions its owner sets in the app
("pause on battery", "only when I'm away", a CPU-time share) are applied here, on the
app's side, by switching the node's donation: :func:`decide` is the pure rule, and
:func:`read_power` and :class:`IdleMonitor` read the machine.

Where the machine cannot tell (no battery information, no idle source), the readers say
so with None and a sentence for the UI; :func:`decide` then errs toward not donating.

Idle sources, tried in order: GNOME's Mutter idle monitor (X11 and Wayland), the
freedesktop ScreenSaver service (KDE and others), then the X11 screensaver extension
(libXss). A Wayland desktop with neither D-Bus service has no idle query open to apps,
and a headless or offscreen session has no user input to watch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._settings import GuiSettings

log = logging.getLogger(__name__)

POWER_SUPPLY = Path("/sys/class/power_supply")
_DBUS_TIMEOUT_MS = 250  # an idle query runs on the GUI thread: never wait longer


@dataclass(frozen=True)
class Decision:
    """What the node should do now, and why, in words for the donate panel."""

    on: bool
    cores: int
    reason: str
    paused: bool = False  # the owner wants to donate, but a condition holds it back


def effective_cores(cores: int, cpu_percent: int) -> int:
    """Worker processes for a CPU-time share: whole cores, at least one.

    The node runs each donated core at full speed; the share is applied to the total
    (4 cores at 50% -> 2 processes), which is what the app can enforce honestly.
    """
    return max(1, cores * cpu_percent // 100)


def decide(settings: GuiSettings, *, idle_seconds: float | None,
           on_battery: bool | None) -> Decision:
    """The donation the owner's settings call for, given the machine's state now."""
    cores = effective_cores(settings.cores, settings.cpu_percent)
    if not settings.donate:
        return Decision(False, cores, "Off: this computer runs no one else's jobs")
    if settings.pause_on_battery and on_battery:
        return Decision(False, cores, "Paused: this computer runs on battery", paused=True)
    if settings.idle_only:
        if idle_seconds is None:
            # Consent: "only when I'm away" cannot be checked here, so do not donate.
            return Decision(False, cores, "Paused: idle time cannot be read on this desktop",
                            paused=True)
        if idle_seconds < settings.idle_minutes * 60:
            return Decision(False, cores, f"Paused: in use (donates after "
                            f"{settings.idle_minutes} min without input)", paused=True)
    plural = "s" if cores != 1 else ""
    return Decision(True, cores, f"Donating {cores} core{plural} to the swarm")


# --- battery --------------------------------------------------------------------------


@dataclass(frozen=True)
class PowerState:
    """Whether the machine runs on battery (None: it cannot tell), with a UI sentence."""

    on_battery: bool | None
    detail: str


def read_power(root: Path = POWER_SUPPLY) -> PowerState:
    """Read Linux's ``power_supply`` class: on battery = a system battery discharging
    while no mains or USB supply is online."""
    if not root.is_dir():
        return PowerState(None, "no battery information on this system")
    mains_online = False
    batteries: list[str] = []
    for supply in sorted(root.iterdir()):
        kind = _read(supply / "type")
        if kind in ("Mains", "USB") and _read(supply / "online") == "1":
            mains_online = True
        elif kind == "Battery" and _read(supply / "scope") != "Device":
            # scope=Device: a mouse or headset battery, not the computer's.
            batteries.append(_read(supply / "status") or "Unknown")
    if not batteries:
        return PowerState(None, "no battery (mains power only)")
    if mains_online or all(status != "Discharging" for status in batteries):
        return PowerState(False, "on mains power")
    return PowerState(True, "on battery")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return ""


# --- idle time ------------------------------------------------------------------------


class IdleMonitor:
    """Seconds since the owner last used keyboard or mouse, where the desktop tells."""

    def __init__(self, query: Callable[[], float | None] | None, source: str) -> None:
        self._query = query
        self.source = source  # a sentence for the UI: where idle time comes from, or why not

    @property
    def available(self) -> bool:
        """True if this desktop reports idle time."""
        return self._query is not None

    def idle_seconds(self) -> float | None:
        """Idle time now, or None if it cannot be read."""
        if self._query is None:
            return None
        try:
            return self._query()
        except Exception as exc:  # noqa: BLE001 - a desktop service misbehaving is not fatal
            log.debug("idle query failed: %s", exc)
            return None

    @classmethod
    def find(cls, platform_name: str) -> IdleMonitor:
        """The first idle source that answers on this desktop (see the module docstring)."""
        if platform_name in ("offscreen", "minimal", "vnc"):
            return cls(None, f"not available: no desktop session ({platform_name} display)")
        for query, source in (_mutter(), _freedesktop()):
            if query is not None and query() is not None:
                return cls(query, source)
        wayland = (os.environ.get("WAYLAND_DISPLAY") or
                   os.environ.get("XDG_SESSION_TYPE") == "wayland")
        if not wayland and os.environ.get("DISPLAY"):
            query = _xscreensaver()
            if query is not None:
                return cls(query, "from the X11 screensaver extension")
        if wayland:
            return cls(None, "not available: this Wayland desktop offers no idle-time "
                             "service to apps (GNOME's and KDE's do)")
        return cls(None, "not available: no X11 screensaver extension or idle service")


def _dbus_query(service: str, path: str, interface: str, method: str,
                scale: float) -> Callable[[], float | None] | None:
    """A query of one D-Bus method returning idle time (in units of ``scale`` seconds)."""
    try:
        from PySide6.QtDBus import QDBus, QDBusConnection, QDBusMessage
    except ImportError:
        return None
    bus = QDBusConnection.sessionBus()
    if not bus.isConnected():
        return None
    interface_ = bus.interface()
    if interface_ is None:
        return None
    registered = interface_.isServiceRegistered(service)
    if not (registered.value() if hasattr(registered, "value") else registered):
        return None

    def query() -> float | None:
        message = QDBusMessage.createMethodCall(service, path, interface, method)
        reply = bus.call(message, QDBus.CallMode.Block, _DBUS_TIMEOUT_MS)
        if reply.type() != QDBusMessage.MessageType.ReplyMessage or not reply.arguments():
            return None
        return float(reply.arguments()[0]) * scale

    return query


def _mutter() -> tuple[Callable[[], float | None] | None, str]:
    return (_dbus_query("org.gnome.Mutter.IdleMonitor", "/org/gnome/Mutter/IdleMonitor/Core",
                        "org.gnome.Mutter.IdleMonitor", "GetIdletime", 0.001),
            "from GNOME's idle monitor")


def _freedesktop() -> tuple[Callable[[], float | None] | None, str]:
    return (_dbus_query("org.freedesktop.ScreenSaver", "/org/freedesktop/ScreenSaver",
                        "org.freedesktop.ScreenSaver", "GetSessionIdleTime", 1.0),
            "from the desktop's screensaver service")


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [("window", ctypes.c_ulong), ("state", ctypes.c_int), ("kind", ctypes.c_int),
                ("til_or_since", ctypes.c_ulong), ("idle", ctypes.c_ulong),
                ("event_mask", ctypes.c_ulong)]


def _xscreensaver() -> Callable[[], float | None] | None:
    """Idle time from libXss, on a display connection of our own (Qt's is not ours)."""
    x11_name, xss_name = ctypes.util.find_library("X11"), ctypes.util.find_library("Xss")
    if not x11_name or not xss_name:
        return None
    try:
        x11, xss = ctypes.CDLL(x11_name), ctypes.CDLL(xss_name)
    except OSError:
        return None
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryExtension.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int),
                                               ctypes.POINTER(ctypes.c_int)]
    xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong,
                                          ctypes.POINTER(_XScreenSaverInfo)]
    display = x11.XOpenDisplay(None)
    if not display:
        return None
    event, error = ctypes.c_int(), ctypes.c_int()
    if not xss.XScreenSaverQueryExtension(display, ctypes.byref(event), ctypes.byref(error)):
        return None  # the X server lacks the extension (Xvfb has it)
    info = xss.XScreenSaverAllocInfo()
    root = x11.XDefaultRootWindow(display)

    def query() -> float | None:
        if not xss.XScreenSaverQueryInfo(display, root, info):
            return None
        return float(info.contents.idle) / 1000.0

    return query
