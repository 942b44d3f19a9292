"""Every example job, run through the real `octop2p run` with sandboxed workers."""

from __future__ import annotations

import json
import math
import struct
import tarfile
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, run_cli


def count_primes_below(n: int) -> int:
    """An independent reference: a plain sieve of Eratosthenes."""
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\x00\x00"
    for p in range(2, math.isqrt(n - 1) + 1):
        if sieve[p]:
            sieve[p * p :: p] = bytes(len(range(p * p, n, p)))
    return sum(sieve)


def test_primes(tmp_path: Path) -> None:
    out = tmp_path / "primes-out"
    proc = run_cli("run", EXAMPLES / "primes", "-w", "2", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    expected = count_primes_below(10_000_000)
    assert int((out / "count.txt").read_text()) == expected == 664579
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == expected
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"] == "done" and report["fragments"] == 100
    assert set(report["workers"]) == {"local-0", "local-1"}  # both workers took part
    assert sum(report["workers"].values()) == 100


def _reference_wordcount() -> dict[str, int]:
    counts: Counter[str] = Counter()
    for path in (EXAMPLES / "books").glob("*.txt"):
        for line in path.read_text().splitlines():
            counts.update(word.lower() for word in line.split())
    return counts


@pytest.mark.parametrize("script", ["wordcount.py", "wordcount_lazy.py"])
def test_wordcount_scripts_match_counter(script: str, tmp_path: Path) -> None:
    proc = run_cli("run", EXAMPLES / script, "-w", "2", "-o", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    expected = _reference_wordcount()
    lines = proc.stdout.splitlines()
    # final(key, value) prints "word (word, n)", in sorted key order, as in octo.py.
    assert lines == [f"{w} {(w, n)!r}" for w, n in sorted(expected.items())]
    assert (tmp_path / "out" / "output.txt").read_text() == proc.stdout


def test_mandelbrot_writes_a_valid_png(tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = run_cli("run", EXAMPLES / "mandelbrot", "-w", "2", "-o", out)
    assert proc.returncode == 0, proc.stderr
    data = (out / "mandelbrot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert width > 0 and height > 0
    assert len(raw) == height * (1 + 3 * width)
    assert len(set(raw)) > 10  # a picture, not a blank
    assert not (out / "escape_times.raw").exists()


def test_montecarlo_pi_tarball_out(tmp_path: Path) -> None:
    out = tmp_path / "pi.tar.gz"
    proc = run_cli("run", EXAMPLES / "montecarlo_pi", "-w", "2", "-o", out)
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        estimate = float(tar.extractfile("pi.txt").read())  # type: ignore[union-attr]
    assert abs(estimate - math.pi) < 0.01


def test_default_out_and_rerun_replaces_own_results(tmp_path: Path) -> None:
    first = run_cli("run", EXAMPLES / "montecarlo_pi", "-w", "1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "montecarlo_pi-results" / "pi.txt").exists()
    again = run_cli("run", EXAMPLES / "montecarlo_pi", "-w", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_refuses_to_overwrite_a_foreign_folder(tmp_path: Path) -> None:
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not lose")
    proc = run_cli("run", EXAMPLES / "montecarlo_pi", "-o", precious)
    assert proc.returncode == 2
    assert "not written by octop2p" in proc.stderr
    assert (precious / "thesis.txt").read_text() == "do not lose"
