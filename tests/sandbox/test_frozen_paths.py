"""Landlock's read paths in a frozen (PyInstaller) app: its modules live in an archive
appended to the program file, outside sys.prefix, and children must still import them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sandbox import _confine


def test_frozen_program_file_is_readable_not_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = tmp_path / "bundle" / "octop2p"
    program.parent.mkdir()
    program.write_bytes(b"\x7fELF and an archive")
    (program.parent / "beside.txt").write_text("not for jobs")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(program))
    paths = _confine.python_read_paths()
    assert str(program.resolve()) in paths
    assert str(program.parent.resolve()) not in paths

