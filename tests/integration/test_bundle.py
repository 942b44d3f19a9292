"""The PyInstaller bundle (``make bundle``) run as a user runs it: from another folder,
with nothing of the venv or the checkout in its environment. Skipped until it is built."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import sandbox
from tests.conftest import EXAMPLES, ROOT

PROGRAM = ROOT / "dist" / "octop2p" / "octop2p"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not PROGRAM.is_file(), reason="no bundle: run `make bundle` first"),
]


def bundled(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROGRAM), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(cwd)})


def test_version(tmp_path: Path) -> None:
    done = bundled("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("octop2p, version")


def test_primes(tmp_path: Path) -> None:
    done = bundled("run", str(EXAMPLES / "primes"), "-w", "2", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "count.txt").read_text().strip() == "664579"


def test_wordcount_script(tmp_path: Path) -> None:
    done = bundled("run", str(EXAMPLES / "wordcount.py"), "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "the ('the', 317)" in done.stdout.splitlines()


def _package(folder: Path, process_body: str) -> Path:
    folder.mkdir()
    (folder / "Split.py").write_text("def splitter():\n    yield 1\n")
    (folder / "Process.py").write_text(f"def process(fragment):\n{process_body}")
    (folder / "Merge.py").write_text(
        "def merger(result, results_dir):\n"
        "    (results_dir / 'result.txt').write_text(repr(result))\n"
    )
    return folder


def test_job_imports_stdlib_the_fork_server_did_not_preload(tmp_path: Path) -> None:
    """The bundle keeps its modules in the program file, which the sandbox must let
    children read (sandbox/_confine.py, python_read_paths)."""
    job = _package(tmp_path / "imports", (
        "    import sqlite3, unicodedata, xml.dom.minidom\n"
        "    return sqlite3.connect(':memory:').execute('select 6*7').fetchone()[0]\n"
    ))
    done = bundled("run", str(job), "-w", "1", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "result.txt").read_text() == "42"


@pytest.mark.skipif(not sandbox.probe()["landlock"].available, reason="no Landlock here")
def test_sandbox_holds_in_the_bundle(tmp_path: Path) -> None:
    job = _package(tmp_path / "snoop", "    return open('/etc/passwd').read()\n")
    done = bundled("run", str(job), "-w", "1", "-o", "out", cwd=tmp_path)
    assert done.returncode == 1
    assert "rule: files" in done.stderr
    assert not (tmp_path / "out" / "result.txt").exists()
