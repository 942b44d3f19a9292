"""The app's donation policy, battery reading, settings file and job book: no Qt needed."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gui._power import IdleMonitor, decide, effective_cores, read_power
from gui._settings import GuiSettings
from gui._store import JobBook, peer_label, short_id, throughput
from octop2p._config import Config
from octop2p._home import Home

pytestmark = pytest.mark.gui

ON = GuiSettings(donate=True, cores=1, pause_on_battery=True, idle_only=False)


def test_off_is_off_whatever_the_machine() -> None:
    decision = decide(dataclasses.replace(ON, donate=False), idle_seconds=9999, on_battery=False)
    assert not decision.on and not decision.paused


def test_on_battery_pauses_only_if_asked() -> None:
    assert decide(ON, idle_seconds=None, on_battery=True).paused
    assert not decide(ON, idle_seconds=None, on_battery=True).on
    relaxed = dataclasses.replace(ON, pause_on_battery=False)
    assert decide(relaxed, idle_seconds=None, on_battery=True).on
    # No battery information (a desktop) never pauses.
    assert decide(ON, idle_seconds=None, on_battery=None).on


def test_only_when_away_follows_idle_time() -> None:
    away = dataclasses.replace(ON, idle_only=True, idle_minutes=5)
    assert not decide(away, idle_seconds=60, on_battery=False).on
    assert "in use" in decide(away, idle_seconds=60, on_battery=False).reason
    assert decide(away, idle_seconds=301, on_battery=False).on
    # Consent: where idle time cannot be read, "only when I'm away" means not now.
    unknown = decide(away, idle_seconds=None, on_battery=False)
    assert not unknown.on and unknown.paused and "cannot be read" in unknown.reason


def test_cpu_share_becomes_whole_cores() -> None:
    assert effective_cores(4, 50) == 2
    assert effective_cores(4, 100) == 4
    assert effective_cores(4, 10) == 1
    assert effective_cores(1, 30) == 1  # never zero: off is the switch's job
    settings = dataclasses.replace(ON, cores=os.cpu_count() or 1, cpu_percent=50)
    assert decide(settings, idle_seconds=None, on_battery=None).cores == \
        max(1, (os.cpu_count() or 1) // 2)


def _supply(root: Path, name: str, **files: str) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    for key, value in files.items():
        (folder / key).write_text(value + "\n")


def test_read_power(tmp_path: Path) -> None:
    assert read_power(tmp_path / "missing").on_battery is None
    root = tmp_path / "ps"
    root.mkdir()
    assert read_power(root).on_battery is None  # no battery at all
    _supply(root, "hidpp_battery_0", type="Battery", scope="Device", status="Discharging")
    assert read_power(root).on_battery is None  # a mouse's battery is not the computer's
    _supply(root, "BAT0", type="Battery", status="Discharging")
    assert read_power(root).on_battery is True
    _supply(root, "AC", type="Mains", online="1")
    assert read_power(root).on_battery is False
    (root / "AC" / "online").write_text("0\n")
    (root / "BAT0" / "status").write_text("Full\n")
    assert read_power(root).on_battery is False  # full, on no supply: not draining


def test_idle_monitor_reports_what_it_cannot_do() -> None:
    monitor = IdleMonitor.find("offscreen")
    assert not monitor.available and monitor.idle_seconds() is None
    assert "not available" in monitor.source
    failing = IdleMonitor(lambda: 1 / 0, "broken")
    assert failing.available and failing.idle_seconds() is None


def test_settings_round_trip_and_fall_back_to_config(tmp_path: Path) -> None:
    home = Home.locate(tmp_path / "home")
    home.create()
    (home.path / "config.toml").write_text("donate = true\ncores = 1\ncpu_percent = 40\n")
    config = Config.load(home)
    settings = GuiSettings.load(home, config)
    assert (settings.donate, settings.cores, settings.cpu_percent) == (True, 1, 40)
    changed = settings.updated({"donate": False, "idle_only": True, "theme": "dark",
                                "results_dir": str(tmp_path / "r")})
    changed.save(home)
    assert oct((home.path / "gui.toml").stat().st_mode & 0o777) == "0o600"
    again = GuiSettings.load(home, config)
    # The donation is the node's setting: config.toml's, never gui.toml's.
    assert again == dataclasses.replace(changed, donate=True)
    assert "\ndonate =" not in (home.path / "gui.toml").read_text()


def test_bad_settings_are_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    home = Home.locate(tmp_path / "home")
    home.create()
    (home.path / "gui.toml").write_text('idle_minutes = 500\ntheme = "purple"\nwat = 1\n'
                                        'pause_on_battery = false\ndonate = true\n')
    settings = GuiSettings.load(home)
    assert settings.idle_minutes == 5 and settings.theme == "system"
    assert settings.pause_on_battery is False
    assert settings.donate is False  # a donation only config.toml can switch on
    assert "unknown setting" in caplog.text and "1 to 240 minutes" in caplog.text
    (home.path / "gui.toml").write_text("this is = not toml [")
    assert GuiSettings.load(home) == GuiSettings()


def test_job_book_from_events_and_status() -> None:
    book = JobBook()
    book.apply_event({"event": "job", "job": "aa11", "state": "running", "name": "primes",
                      "time": 100.0})
    for done in (10, 50, 100):
        book.apply_event({"event": "progress", "job": "aa11", "phase": "fragments",
                          "done": done, "total": 100, "workers": {"local-0": done // 2,
                                                                  "local-1": done // 2,
                                                                  "PEERID-X": 0},
                          "time": 100.0 + done / 10}, local_id="SELF-ID")
    job = book.jobs["aa11"]
    assert job.percent == 100 and job.fragments_done == 100
    assert job.workers == {"SELF-ID": 100, "PEERID-X": 0}  # local slots are this node
    book.apply_event({"event": "job", "job": "aa11", "state": "done", "time": 111.0})
    assert job.is_finished and job.finished == 111.0
    points = job.throughput(buckets=11)
    assert len(points) == 11 and points[-1][0] == pytest.approx(11.0)
    assert max(rate for _, rate in points) > 0
    book.apply_statuses([{"job": "bb22", "name": "wc", "state": "running", "phase": "map",
                          "fragments_done": 3, "fragments_total": None, "workers": {},
                          "started": 200.0}])
    assert book.jobs["bb22"].percent is None  # total unknown while the splitter runs
    assert [j.id for j in book.ordered()] == ["bb22", "aa11"]  # newest first


def test_throughput_rates() -> None:
    samples = [(0.0, 0), (1.0, 10), (2.0, 30)]
    # 10 then 20 fragments a second, smoothed over neighbouring slices.
    assert throughput(samples, 0.0, 2.0, buckets=2) == [(1.0, 15.0), (2.0, 15.0)]
    assert throughput([], None, 5.0) == []
    # Slices are never shorter than half a second (progress comes ten times a second).
    assert len(throughput(samples, 0.0, 4.0, buckets=48)) == 8


def test_peer_labels() -> None:
    peers = [{"id": "ABCDEF1-XYZ", "name": "lab-pc"}, {"id": "QQQQQQQ-RRR", "name": ""}]
    assert peer_label(peers, "ABCDEF1-XYZ") == "lab-pc (ABCDEF1)"
    assert peer_label(peers, "QQQQQQQ-RRR") == "QQQQQQQ"
    assert peer_label(peers, "ME-1", self_id="ME-1") == "this computer"
    assert short_id("ABC-DEF") == "ABC"
