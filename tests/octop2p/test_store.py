"""Quotas of packages/ and jobs/: the oldest entries go first, never those in use."""

from __future__ import annotations

import os
from pathlib import Path

from octop2p.net._store import evict_oldest


def _entry(folder: Path, stem: str, size: int, age: int) -> None:
    (folder / stem).mkdir()
    (folder / stem / "data").write_bytes(bytes(size))
    (folder / f"{stem}.tar").write_bytes(bytes(size))
    for path in (folder / stem, folder / f"{stem}.tar"):
        os.utime(path, (age, age))


def test_oldest_entries_go_until_the_folder_fits(tmp_path: Path) -> None:
    for i, stem in enumerate(["a", "b", "c", "d"]):
        _entry(tmp_path, stem, 100_000, 1000 + i)
    (tmp_path / ".download.part").write_bytes(bytes(500_000))  # under way: never removed
    removed = evict_oldest(tmp_path, 450_000, keep={"a"})
    assert removed == ["b", "c"]  # a is in use; b and c are the oldest of the rest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".download.part", "a", "a.tar", "d", "d.tar"]


def test_nothing_goes_under_the_quota(tmp_path: Path) -> None:
    _entry(tmp_path, "a", 1000, 1000)
    assert evict_oldest(tmp_path, 1 << 20) == []
    assert (tmp_path / "a").is_dir()
