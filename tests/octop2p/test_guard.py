"""The donor's breach record (one layer: a clock handed in, a file in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from octop2p._config import Config, ConfigError
from octop2p.net._guard import BREACH_RULES, MAX_CHIEFS, ChiefGuard

CHIEF = "AAAAAAA-BBBBBBB-CCCCCCC-DDDDDDD"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_chief_is_blocked_after_the_threshold_of_breaching_jobs(tmp_path: Path) -> None:
    clock = Clock()
    guard = ChiefGuard(tmp_path / "b.json", threshold=3, hours=24, clock=clock)
    assert guard.breach(CHIEF, "job1", "a", "network", "tried to open a socket")
    # More failures of the same job are one breach: a buggy job is not three attacks.
    assert not guard.breach(CHIEF, "job1", "a", "network", "again")
    assert not guard.breach(CHIEF, "job1", "a", "files", "again")
    assert guard.breach(CHIEF, "job2", "b", "files", "tried to read /etc/passwd")
    assert guard.blocked(CHIEF) == ""
    assert guard.breach(CHIEF, "job3", "c", "processes", "tried to fork")
    reason = guard.blocked(CHIEF)
    assert "3 of its jobs broke sandbox rules" in reason and "/etc/passwd" in reason
    assert "block_after_breaches = 3" in reason
    assert guard.blocked("OTHER") == ""
    # The block lasts block_hours, then the chief starts afresh.
    clock.now += 24 * 3600 - 1
    assert guard.blocked(CHIEF)
    clock.now += 2
    assert guard.blocked(CHIEF) == ""


def test_breaches_older_than_the_window_are_forgotten_and_zero_never_blocks() -> None:
    clock = Clock()
    guard = ChiefGuard(None, threshold=2, hours=1, clock=clock)
    guard.breach(CHIEF, "job1", "a", "network", "x")
    clock.now += 3601
    guard.breach(CHIEF, "job2", "b", "network", "x")
    assert guard.blocked(CHIEF) == ""
    never = ChiefGuard(None, threshold=0, clock=clock)
    for i in range(10):
        never.breach(CHIEF, f"job{i}", "a", "network", "x")
    assert never.blocked(CHIEF) == ""


def test_the_record_survives_a_restart_and_unblock_lifts_by_prefix(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    guard = ChiefGuard(path, threshold=1)
    guard.breach(CHIEF, "job1", "a", "seccomp", "x")
    guard.save()
    assert path.stat().st_mode & 0o777 == 0o600
    again = ChiefGuard.load(path, threshold=1)
    assert again.blocked(CHIEF) and [b["chief"] for b in again.blocks()] == [CHIEF]
    assert again.unblock("zzz") == []
    assert again.unblock("aaaa") == [CHIEF]
    assert again.blocked(CHIEF) == "" and again.blocks() == []


def test_a_damaged_or_hostile_record_is_started_afresh(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    for text in ("not json", json.dumps({"chiefs": {"X": {"breaches": [{"evil": 1}]}}}),
                 json.dumps([1, 2])):
        path.write_text(text)
        assert ChiefGuard.load(path).chiefs == {}


def test_the_number_of_chiefs_remembered_is_bounded() -> None:
    guard = ChiefGuard(None, threshold=5)
    for i in range(MAX_CHIEFS + 50):
        guard.breach(f"C{i}", "job", "a", "network", "x")
    assert len(guard.chiefs) == MAX_CHIEFS


def test_only_sandbox_rules_are_breaches() -> None:
    assert {"network", "files", "processes", "threads", "memory"} <= BREACH_RULES
    # A slow or deep job is not an attack; an exception of the job's own has no rule.
    assert not {"wall time", "cpu time", "recursion", None} & BREACH_RULES


def test_config_keys(tmp_path: Path) -> None:
    assert Config().block_after_breaches == 3 and Config().block_hours == 24
    (tmp_path / "config.toml").write_text("block_after_breaches = 0\nblock_hours = 2\n")
    config = Config.load(tmp_path)
    assert (config.block_after_breaches, config.block_hours) == (0, 2)
    for bad in ("block_after_breaches = -1", "block_after_breaches = true", "block_hours = 0"):
        (tmp_path / "config.toml").write_text(bad + "\n")
        with pytest.raises(ConfigError, match=bad.split()[0]):
            Config.load(tmp_path)
