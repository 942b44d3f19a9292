"""The one way octop2p unpacks a tarball that came from a peer (docs/security.md).

A member's job package (on the chief), a chief's package (on every donor) and a chief's
results (on the submitter) are hostile bytes. ``tarfile.extractall`` trusts too much:
its ``filter="data"`` has had bypasses (CVE-2025-4517: a symlink judged "inside" through
a path longer than PATH_MAX). So this module walks the members itself and writes only
what it understands:

- regular files and folders; every other member type (symlink, hard link, device, fifo,
  sparse file) is refused;
- a name is relative, without ``..``, NUL or empty parts, at most ``MAX_NAME`` bytes,
  ``MAX_PART`` bytes per part and ``MAX_DEPTH`` parts deep, and appears once;
- every file and folder is made below a directory fd of a folder this call created, with
  ``O_NOFOLLOW | O_CREAT | O_EXCL``: nothing that exists is followed or overwritten;
- at most ``max_entries`` members and ``max_bytes`` bytes of file data, counted before
  writing, and the raw stream read is bounded too (a gzip bomb stops at the cap).

Any refusal removes the folder and raises :class:`UnpackError`; nothing is ever written
outside it.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, cast

from octop2p.errors import OctoError

#: Members a tarball from a peer may hold (files and folders together).
MAX_ENTRIES = 10_000
#: Longest member name, in bytes of UTF-8, and longest part of one.
MAX_NAME = 1024
MAX_PART = 255
MAX_DEPTH = 64
#: A single read larger than this can only be a tar header (pax, GNU long name) from a
#: hostile peer: data is read in _COPY pieces, headers of sane names are a few KiB.
_MAX_READ = 4 << 20
_COPY = 256 << 10
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnpackError(OctoError):
    """A tarball from a peer breaks a rule of what octop2p unpacks; nothing of it was kept."""


@dataclass(frozen=True)
class Unpacked:
    """What :func:`unpack_tar` wrote."""

    files: int
    folders: int
    bytes: int


class _CappedReader(io.RawIOBase):
    """A read-only stream that refuses to hand out more than ``cap`` bytes in all, or a
    header-sized read larger than ``_MAX_READ`` (tarfile reads a pax header whole)."""

    def __init__(self, inner: IO[bytes], cap: int) -> None:
        self._inner, self._cap, self._read = inner, cap, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0 and offset > self._cap:
            raise UnpackError(f"the tarball is larger than {self._cap} bytes unpacked")
        return self._inner.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > _MAX_READ:
            raise UnpackError(f"a tar header of {size} bytes (at most {_MAX_READ})")
        data = self._inner.read(size)
        self._read += len(data)
        if self._read > self._cap:
            raise UnpackError(f"the tarball is larger than {self._cap} bytes unpacked")
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def plain_name(name: str) -> bool:
    """``name`` is one plain file name: no folder, no ``..``, not absolute, no NUL."""
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\x00" not in name
        and len(name.encode("utf-8", "surrogateescape")) <= MAX_PART
    )


def check_name(name: str) -> tuple[str, ...]:
    """The parts of a member name, or UnpackError naming the rule it breaks."""
    if "\x00" in name:
        raise UnpackError(f"member name {name[:80]!r} holds a NUL byte")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        raise UnpackError(f"member name {name[:80]!r}... is longer than {MAX_NAME} bytes")
    if name.startswith("/"):
        raise UnpackError(f"member name {name[:200]!r} is absolute")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnpackError(f"member name {name[:200]!r} climbs out with '..'")
    if len(parts) > MAX_DEPTH:
        raise UnpackError(f"member name {name[:80]!r}... is more than {MAX_DEPTH} folders deep")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_PART:
            raise UnpackError(f"a part of member name {name[:80]!r}... is over {MAX_PART} bytes")
    return parts


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link (to {member.linkname[:200]!r})"
    if member.islnk():
        return f"a hard link (to {member.linkname[:200]!r})"
    if member.ischr() or member.isblk():
        return "a device node"
    if member.isfifo():
        return "a fifo"
    if member.issparse():
        return "a sparse file"
    return f"of tar type {member.type!r}"


class _Writer:
    """Makes folders and files below one directory fd, never following anything."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self.made: set[tuple[str, ...]] = set()

    def folder(self, parts: tuple[str, ...]) -> int:
        """An fd of the folder ``parts`` (made as needed); the caller closes it."""
        fd = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                if parts[: i + 1] not in self.made:
                    os.mkdir(part, 0o755, dir_fd=fd)
                    self.made.add(parts[: i + 1])
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def file(self, parts: tuple[str, ...], source: IO[bytes], size: int) -> None:
        parent = self.folder(parts[:-1])
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
        finally:
            os.close(parent)
        with open(fd, "wb", closefd=True) as out:
            left = size
            while left:
                chunk = source.read(min(_COPY, left))
                if not chunk:
                    raise UnpackError(f"member {'/'.join(parts)[:200]!r} is cut short")
                out.write(chunk)
                left -= len(chunk)


def unpack_tar(
    source: bytes | Path,
    dest: Path,
    *,
    max_bytes: int,
    max_entries: int = MAX_ENTRIES,
    gz: bool = False,
) -> Unpacked:
    """Unpack the tarball ``source`` (bytes, or a file) into the new folder ``dest``.

    ``dest`` must not exist: it is made here, and removed again if anything is refused.
    Raises :class:`UnpackError` (or OSError if the disk fails).
    """
    os.mkdir(dest, 0o700)
    try:
        with _open_raw(source) as raw:
            inner = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb")) if gz else raw
            # Every member costs at least a 512-byte header and up to 511 bytes of padding.
            capped = _CappedReader(inner, max_bytes + (max_entries + 2) * 1536 + (1 << 20))
            return _unpack_members(capped, dest, max_bytes, max_entries)
    except UnpackError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError, ValueError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile) and exc.errno:
            raise
        raise UnpackError(f"not a readable tarball: {exc}") from None


def _open_raw(source: bytes | Path) -> BinaryIO:
    if isinstance(source, bytes | bytearray | memoryview):
        return io.BytesIO(source)
    return open(source, "rb")


def _unpack_members(
    capped: _CappedReader, dest: Path, max_bytes: int, max_entries: int
) -> Unpacked:
    root_fd = os.open(dest, _DIR_FLAGS)
    writer = _Writer(root_fd)
    seen: set[tuple[str, ...]] = set()
    files = folders = total = entries = 0
    try:
        with tarfile.open(fileobj=capped, mode="r:") as tar:  # type: ignore[call-overload]
            while (member := tar.next()) is not None:
                entries += 1
                if entries > max_entries:
                    raise UnpackError(f"the tarball holds more than {max_entries} members")
                parts = check_name(member.name)
                if not (member.isreg() or member.isdir()) or member.issparse():
                    raise UnpackError(
                        f"member {member.name[:200]!r} is {_kind(member)}: only regular "
                        "files and folders are unpacked")
                if not parts:
                    continue  # the archive's own "." folder
                if parts in seen:
                    raise UnpackError(f"member {member.name[:200]!r} appears twice")
                seen.add(parts)
                total += member.size if member.isreg() else 0
                if total > max_bytes:
                    raise UnpackError(f"the tarball unpacks to more than {max_bytes} bytes")
                _write_member(tar, member, parts, writer)
                files, folders = files + member.isreg(), folders + member.isdir()
                # Forget members as we go: the loop keeps nothing per member but `seen`.
                tar.members.clear()  # type: ignore[attr-defined]
    finally:
        os.close(root_fd)
    return Unpacked(files=files, folders=folders, bytes=total)


def _write_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, parts: tuple[str, ...], writer: _Writer
) -> None:
    try:
        if member.isdir():
            if parts not in writer.made:
                os.close(writer.folder(parts))
            return
        data = tar.extractfile(member)
        assert data is not None  # a regular file always has a data stream
        writer.file(parts, data, member.size)
    except (FileExistsError, NotADirectoryError):
        # Made by an earlier member as a file where a folder is wanted, or the reverse.
        raise UnpackError(
            f"member {member.name[:200]!r} clashes with another member (a file and a "
            "folder of one name)"
        ) from None
