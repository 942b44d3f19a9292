"""Run inside `dbus-run-session`: a fake desktop screensaver service, and the app's idle
monitor asking it. Prints the monitor's answer as ``available|source|seconds``.

``python dbus_idle.py serve`` is the service (it answers 77 seconds of idle time);
without arguments the script starts the service, probes it, and stops it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["QT_QPA_PLATFORM"] = "offscreen"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def serve() -> None:
    """The fake org.freedesktop.ScreenSaver service, until killed."""
    from PySide6.QtCore import ClassInfo, QCoreApplication, QObject, Slot
    from PySide6.QtDBus import QDBusConnection

    app = QCoreApplication([])

    @ClassInfo({"D-Bus Interface": "org.freedesktop.ScreenSaver"})
    class ScreenSaver(QObject):
        @Slot(result="uint")
        def GetSessionIdleTime(self) -> int:  # noqa: N802 - the D-Bus method's name
            return 77

    service = ScreenSaver()
    bus = QDBusConnection.sessionBus()
    ok = bus.registerObject("/org/freedesktop/ScreenSaver", service,
                            QDBusConnection.RegisterOption.ExportAllSlots)
    ok = ok and bus.registerService("org.freedesktop.ScreenSaver")
    print("ready" if ok else "failed", flush=True)
    app.exec()


def probe() -> None:
    """Start the service, ask the idle monitor, print what it found."""
    service = subprocess.Popen([sys.executable, __file__, "serve"], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert service.stdout is not None and service.stdout.readline().strip() == "ready"
        from PySide6.QtWidgets import QApplication

        from gui._power import IdleMonitor

        QApplication([])
        monitor = IdleMonitor.find("xcb")
        print(f"{monitor.available}|{monitor.source}|{monitor.idle_seconds()}", flush=True)
    finally:
        service.kill()
        service.wait(timeout=10)


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["serve"] else probe()
