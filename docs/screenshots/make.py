"""Make the screenshots in this folder: the app with peers, a finished and a running job.

    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make.py dark
    QT_QPA_PLATFORM=offscreen .venv/bin/python docs/screenshots/make.py light

`octop2p gui --screenshot PATH` shows the app as it starts (first-start.png); this script
fills it first: three nodes on 127.0.0.1 in one swarm (this one, "lab-pc" donating and
"laptop" not), two examples done, a job running, "lab-pc"'s job running here, and
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
from octop2p._config import Config  # noqa: E402
from octop2p._home import Home  # noqa: E402
from octop2p.cli._net import build_node  # noqa: E402
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


class Shots:
    """The Qt application, the temporary folder and the swarm that the screenshots share."""

    def __init__(self, qapp: QApplication) -> None:
        self.qapp = qapp
        self.tmp = Path(tempfile.mkdtemp(prefix="octop2p-shots-"))
        self.code = SwarmCode.generate()

    def home_for(self, name: str) -> Home:
        """A home on 127.0.0.1 in the shared swarm."""
        home = Home.locate(self.tmp / name)
        home.create()
        (home.path / "config.toml").write_text(
            f'listen_host = "127.0.0.1"\nlisten_port = 0\ndiscovery = false\nname = "{name}"\n')
        home.save_swarm(self.code)
        return home

    def spin(self, done: Callable[[], object], seconds: float = 60) -> None:
        """Run Qt (and the app's trio run) until ``done()``; SystemExit after ``seconds``."""
        end = time.monotonic() + seconds
        while not done() and time.monotonic() < end:
            self.qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 30)
        if not done():
            raise SystemExit("timed out")

    def pause(self, seconds: float) -> None:
        """Run Qt for ``seconds`` (animations settle, toasts fade)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.qapp.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 30)

    def start_app(self) -> OctoApp:
        """The app on "studio", donating, on mains power, its owner away for 7 minutes."""
        home = self.home_for("studio")
        # The owner's consent is the node's config (the app never widens it on its own).
        cores = min(2, os.cpu_count() or 1)
        with (home.path / "config.toml").open("a") as config:
            config.write(f"donate = true\ncores = {cores}\n")
        (home.path / "gui.toml").write_text(f'results_dir = "{self.tmp}/results"\n')
        power = self.tmp / "power_supply"
        for supply, values in (("BAT0", {"type": "Battery", "status": "Charging"}),
                               ("AC", {"type": "Mains", "online": "1"})):
            (power / supply).mkdir(parents=True)
            for key, value in values.items():
                (power / supply / key).write_text(value)
        app = OctoApp(self.qapp, home, tray=False, power_root=power, quit_app=False,
                      idle=IdleMonitor(lambda: 420.0, "from the X11 screensaver extension"))
        app.window.resize(1240, 800)
        app.start()
        self.spin(lambda: app.bridge.ready)
        return app

    def start_peers(self, app: OctoApp) -> list:
        """Peers linked to the app: "lab-pc" (donating 2 cores, submitting a sweep) and
        "laptop"."""
        port = app.bridge.info["port"]
        peers = []
        for name, donate in (("lab-pc", True), ("laptop", False)):
            peer_home = self.home_for(name)
            node = build_node(peer_home, Config.load(peer_home), peers=(f"127.0.0.1:{port}",),
                              donate=donate, cores=2 if donate else 1)
            app.guest.spawn(node.serve)
            peers.append(node)
        self.spin(lambda: len(app.bridge.peers) == 2)
        sweep = write_job(self.tmp / "sweep", "param-sweep", 4000,
                          "import time\ndef process(i):\n    time.sleep(0.05)\n    return i\n")

        async def lab_submits() -> None:
            await peers[0].submit(sweep)

        app.guest.spawn(lab_submits)
        return peers


def main(theme: str, out: Path) -> None:
    """Save main-, peers-, log- and submit-error-THEME.png into ``out``."""
    os.environ["OCTOP2P_THEME"] = theme
    shots = Shots(QApplication([]))
    app = shots.start_app()
    shots.start_peers(app)
    def delivered() -> int:
        return sum(j.state == "done" and j.results_path is not None
                   for j in app.bridge.book.jobs.values())

    for count, example in enumerate(("montecarlo_pi", "primes"), 1):
        app.bridge.submit(str(ROOT / "examples" / example))
        shots.spin(lambda count=count: delivered() >= count)
    frames = write_job(shots.tmp / "frames", "render-frames", 900,
                       "import math, time\ndef process(i):\n"
                       "    time.sleep(0.02 + 0.03 * (1 + math.sin(i / 9)))\n    return i\n")
    app.bridge.submit(str(frames))

    def running() -> list:
        return [j for j in app.bridge.book.jobs.values() if j.name == "render-frames"]

    shots.spin(lambda: running() and running()[0].done >= 520)
    app.window.jobs.select(running()[0].id)
    shots.pause(0.6)
    app.window.notifier.toast.hide()
    app.window.grab().save(str(out / f"main-{theme}.png"))
    for tab, name in ((app.window.peers, "peers"), (app.window.log_view, "log")):
        app.window.tabs.setCurrentWidget(tab)
        shots.pause(0.3)
        app.window.grab().save(str(out / f"{name}-{theme}.png"))

    bad = write_job(shots.tmp / "my-job", "my-job", 1000,
                    "def process(n):\n    for d in range(2, n):\n        if n % d == 0:\n"
                    "            yield d\n")
    dialog = app.window.open_submit()
    dialog.set_path(str(bad))
    shots.spin(lambda: bool(dialog.error_text), 10)
    shots.pause(0.3)
    dialog.grab().save(str(out / f"submit-error-{theme}.png"))
    dialog.close()
    app.quit()
    shots.spin(lambda: app.guest.done, 15)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dark", Path(__file__).resolve().parent)
