"""Make the screenshots in this folder: the app with peers, a finished and a running job.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make.py dark
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make.py light

`octop2p gui --screenshot PATH` shows the app as it starts (first-start.png); this script
fills it first: three nodes on 127.0.0.1 in one swarm (this one, "lab-pc" donating and
"laptop" not), the primes example done, a job running, "lab-pc"'s job running here, and
a package the submit dialog refuses. Everything lives in a temporary folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QEventLoop  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from gui._app import OctoApp  # noqa: E402
from gui._power import IdleMonitor  # noqa: E402
from octop2p.cli._net import build_node  # noqa: E402
from octop2p._config import Config  # noqa: E402
from octop2p._home import Home  # noqa: E402
from protocol import SwarmCode  # noqa: E402


def write_job(folder: Path, name: str, fragments: int, process: str) -> Path:
    """A small split/process/merge package whose fragments take a while."""
    folder.mkdir(parents=True)
    (folder / "job.toml").write_text(f'name = "{name}"\n')
    (folder / "Split.py").write_text(
        f"def splitter():\n    for i in range({fragments}):\n        yield i\n")
    (folder / "Process.py").write_text(process)
    (folder / "Merge.py").write_text("def merger(result, results_dir):\n    pass\n")
    return folder


def main(theme: str, out: Path) -> None:
    """Save main-, peers-, log- and submit-error-THEME.png into ``out``."""
    os.environ["OCTOP2P_THEME"] = theme
    qapp = QApplication([])
    tmp = Path(tempfile.mkdtemp(prefix="octop2p-shots-"))
    code = SwarmCode.generate()

    def home_for(name: str) -> Home:
        home = Home.locate(tmp / name)
        home.create()
        (home.path / "config.toml").write_text(
            f'listen_host = "127.0.0.1"\nlisten_port = 0\ndiscovery = false\nname = "{name}"\n')
        home.save_swarm(code)
        return home

    def spin(done: Callable[[], object], seconds: float = 60) -> None:
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 30)
        if not done():
            raise SystemExit("timed out")

    def pause(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 30)

    home = home_for("studio")
    (home.path / "gui.toml").write_text(f'results_dir = "{tmp}/results"\ndonate = true\n'
                                        f"cores = {min(2, os.cpu_count() or 1)}\n")
    power = tmp / "power_supply"
    for supply, values in (("BAT0", {"type": "Battery", "status": "Charging"}),
                           ("AC", {"type": "Mains", "online": "1"})):
        (power / supply).mkdir(parents=True)
        for key, value in values.items():
            (power / supply / key).write_text(value)
    app = OctoApp(qapp, home, tray=False, power_root=power, quit_app=False,
                  idle=IdleMonitor(lambda: 420.0, "from the X11 screensaver extension"))
    app.window.resize(1240, 800)
    app.start()
    spin(lambda: app.bridge.ready)
    port = app.bridge.info["port"]
    peers = []
    for name, donate in (("lab-pc", True), ("laptop", False)):
        peer_home = home_for(name)
        node = build_node(peer_home, Config.load(peer_home), peers=(f"127.0.0.1:{port}",),
                          donate=donate, cores=2 if donate else 1)
        app.guest.spawn(node.serve)
        peers.append(node)
    spin(lambda: len(app.bridge.peers) == 2)

    sweep = write_job(tmp / "sweep", "param-sweep", 4000,
                      "import time\ndef process(i):\n    time.sleep(0.05)\n    return i\n")

    async def lab_submits() -> None:
        await peers[0].submit(sweep)

    app.guest.spawn(lab_submits)
    app.bridge.submit(str(ROOT / "examples" / "primes"))
    spin(lambda: any(j.state == "done" and j.results_path for j in app.bridge.book.jobs.values()))
    frames = write_job(tmp / "frames", "render-frames", 900,
                       "import math, time\ndef process(i):\n"
                       "    time.sleep(0.02 + 0.03 * (1 + math.sin(i / 9)))\n    return i\n")
    app.bridge.submit(str(frames))

    def running() -> list:
        return [j for j in app.bridge.book.jobs.values() if j.name == "render-frames"]

    spin(lambda: running() and running()[0].done >= 520)
    app.window.jobs.select(running()[0].id)
    pause(0.6)
    app.window.notifier.toast.hide()
    app.window.grab().save(str(out / f"main-{theme}.png"))
    for tab, name in ((app.window.peers, "peers"), (app.window.log_view, "log")):
        app.window.tabs.setCurrentWidget(tab)
        pause(0.3)
        app.window.grab().save(str(out / f"{name}-{theme}.png"))

    bad = write_job(tmp / "my-job", "my-job", 1000,
                    "def process(n):\n    for d in range(2, n):\n        if n % d == 0:\n"
                    "            yield d\n")
    dialog = app.window.open_submit()
    dialog.set_path(str(bad))
    spin(lambda: bool(dialog.error_text), 10)
    pause(0.3)
    dialog.grab().save(str(out / f"submit-error-{theme}.png"))
    dialog.close()
    app.quit()
    spin(lambda: app.guest.done, 15)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dark", Path(__file__).resolve().parent)
