"""The safe unpacker refuses every hostile tarball shape, and writes nothing outside.

Each tarball here is what a hostile member, chief or donor could send. The attacks are
run both through :func:`unpack_tar` and through ``deliver_bytes`` (the submitter's
delivery of a chief's results), the path that used ``extractall(filter="data")``.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from octop2p.engine._results import deliver_bytes
from octop2p.engine._unpack import MAX_ENTRIES, UnpackError, unpack_tar

MiB = 1 << 20


def _tar(add: Callable[[tarfile.TarFile], None], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        add(tar)
    return buf.getvalue()


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _special(tar: tarfile.TarFile, name: str, kind: bytes, link: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    tar.addfile(info)


def _pax_named(tar: tarfile.TarFile, name: str) -> None:
    """A file whose pax header carries ``name`` as it is (a ustar field stops at NUL)."""
    info = tarfile.TarInfo("a")
    info.pax_headers = {"path": name}
    tar.addfile(info)


def cve_2025_4517(tar: tarfile.TarFile) -> None:
    """A symlink chain whose resolved path passes PATH_MAX, so that ``filter="data"``
    judges "escape" to be inside the folder; ``escape/pwned`` then lands in its parent."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    for step in steps:
        _special(tar, os.path.join(path, comp), tarfile.DIRTYPE)
        _special(tar, os.path.join(path, step), tarfile.SYMTYPE, comp)
        path = os.path.join(path, comp)
    linkpath = os.path.join(*steps, "l" * 254)
    _special(tar, linkpath, tarfile.SYMTYPE, "../" * len(steps))
    _special(tar, "escape", tarfile.SYMTYPE, linkpath + "/..")
    _file(tar, "escape/pwned", b"owned\n")


def _many(tar: tarfile.TarFile) -> None:
    """100,000 empty files, their headers patched from one (tarfile's own writer is slow)."""
    header = bytearray(tarfile.TarInfo("f000000").tobuf(tarfile.USTAR_FORMAT))
    assert tar.fileobj is not None
    for i in range(100_000):
        header[:7] = b"f%06d" % i
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\0 " % sum(header)
        tar.fileobj.write(header)
    tar.offset += 512 * 100_000


HOSTILE: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "symlink-inside": (lambda t: _special(t, "link", tarfile.SYMTYPE, "data.txt"),
                       "symbolic link"),
    "symlink-out": (lambda t: (_special(t, "out", tarfile.SYMTYPE, "../.."),
                               _file(t, "out/pwned")), "symbolic link"),
    "hardlink": (lambda t: (_file(t, "a"), _special(t, "b", tarfile.LNKTYPE, "a")),
                 "hard link"),
    "cve-2025-4517-long-path": (cve_2025_4517, "symbolic link"),
    "absolute": (lambda t: _file(t, "/tmp/octop2p-pwned"), "absolute"),
    "dotdot": (lambda t: _file(t, "sub/../../pwned"), "'..'"),
    "device": (lambda t: _special(t, "null", tarfile.CHRTYPE), "device node"),
    "fifo": (lambda t: _special(t, "pipe", tarfile.FIFOTYPE), "fifo"),
    "100000-entries": (_many, "more than"),
    "duplicate": (lambda t: (_file(t, "a", b"1"), _file(t, "a", b"2")), "twice"),
    "duplicate-via-dot": (lambda t: (_file(t, "a", b"1"), _file(t, "./a", b"2")), "twice"),
    "nul": (lambda t: _pax_named(t, "a\x00b"), "NUL"),
    "over-long": (lambda t: _file(t, "x/" * 600 + "y"), "longer than"),
    "file-then-folder": (lambda t: (_file(t, "a"), _file(t, "a/b")), "clashes"),
}


@functools.cache
def _hostile(case: str) -> bytes:
    """The tarball of one HOSTILE case (built once: 100,000 entries take a while)."""
    return _tar(HOSTILE[case][0])


def _untouched(tmp_path: Path) -> None:
    """Nothing but the test's own folders exists around the target."""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"], list(tmp_path.iterdir())
    assert list((tmp_path / "outside").iterdir()) == []
    assert not Path("/tmp/octop2p-pwned").exists()


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarball_is_refused_with_nothing_written(case: str, tmp_path: Path) -> None:
    data, rule = _hostile(case), HOSTILE[case][1]
    (tmp_path / "outside").mkdir()
    with pytest.raises(UnpackError, match=rule):
        unpack_tar(data, tmp_path / "outside" / "dest", max_bytes=64 * MiB)
    _untouched(tmp_path)


@pytest.mark.parametrize("case", sorted(set(HOSTILE) - {"100000-entries"}))
def test_results_from_a_hostile_chief_are_refused_at_delivery(case: str, tmp_path: Path) -> None:
    """``deliver_bytes`` is where the submitter writes a chief's results beside ``-o``."""
    tarball, rule = gzip.compress(_hostile(case), compresslevel=1), HOSTILE[case][1]
    (tmp_path / "outside").mkdir()
    with pytest.raises(UnpackError, match=rule):
        deliver_bytes(tarball, tmp_path / "outside" / "out", job_name="j", job_id="00")
    _untouched(tmp_path)


def test_gzip_bomb_stops_at_the_byte_cap(tmp_path: Path) -> None:
    """64 MiB of zeros in a few KiB of gzip: refused at the cap, before it is written."""
    data = gzip.compress(_tar(lambda t: _file(t, "zeros", bytes(64 * MiB))), compresslevel=9)
    assert len(data) < MiB
    with pytest.raises(UnpackError, match="more than"):
        unpack_tar(data, tmp_path / "dest", max_bytes=8 * MiB, gz=True)
    assert not (tmp_path / "dest").exists()


def test_huge_pax_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A pax header declaring 1 GiB would make tarfile read it whole into memory."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 1 << 30
    raw = header.tobuf(tarfile.USTAR_FORMAT) + bytes(8 * MiB)
    with pytest.raises(UnpackError):
        unpack_tar(raw, tmp_path / "dest", max_bytes=2 * MiB)
    assert not (tmp_path / "dest").exists()


def test_good_tarball_unpacks_files_and_folders(tmp_path: Path) -> None:
    def add(tar: tarfile.TarFile) -> None:
        _special(tar, ".", tarfile.DIRTYPE)
        _special(tar, "sub", tarfile.DIRTYPE)
        _file(tar, "sub/a.txt", b"hello")
        _file(tar, "deep/er/b.bin", bytes(300_000))
        _file(tar, "empty", b"")

    done = unpack_tar(_tar(add), tmp_path / "dest", max_bytes=MiB)
    assert (done.files, done.bytes) == (3, 300_005)
    assert (tmp_path / "dest" / "sub" / "a.txt").read_bytes() == b"hello"
    assert (tmp_path / "dest" / "deep" / "er" / "b.bin").stat().st_size == 300_000
    assert (tmp_path / "dest" / "empty").read_bytes() == b""


def test_destination_must_be_fresh(tmp_path: Path) -> None:
    """An existing folder (perhaps a planted symlink) is never unpacked into."""
    (tmp_path / "dest").symlink_to(tmp_path)
    with pytest.raises(FileExistsError):
        unpack_tar(_tar(lambda t: _file(t, "a")), tmp_path / "dest", max_bytes=MiB)


def test_entry_cap_is_below_the_attack() -> None:
    assert MAX_ENTRIES < 100_000
