"""Who may use a node's home: the exclusive lock on it, and the errors that say why a
home cannot be used.

Several nodes can run on one machine, each with its own home, but never two nodes on
one home: `lock_home` (called by `Home.lock()`) holds an exclusive `fcntl.flock` on the
home's `node.pid` for as long as the node runs, and writes the node's pid in it for the
next one to name.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path
from types import TracebackType

from octop2p.errors import UsageError

__all__ = ["HomeError", "HomeLock", "HomeLocked", "lock_home"]


class HomeError(UsageError):
    """The node's home folder cannot be used."""


class HomeLocked(HomeError):
    """Another octop2p node is using this home folder."""


class HomeLock:
    """The exclusive lock on a home; release it with `release()` or a `with` block."""

    def __init__(self, home: Path, fd: int) -> None:
        self.home = home
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """Whether this lock is still held."""
        return self._fd is not None

    def release(self) -> None:
        """Give up the lock; another node may then use the home. Idempotent."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no stale pid for the next reader
        os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<HomeLock {self.home} {'held' if self.held else 'released'}>"


def lock_home(home: Path, lock_path: Path) -> HomeLock:
    """Lock the existing folder `home` with the file `lock_path`; raise `HomeLocked` if
    another node holds it, `HomeError` if the lock file cannot be used."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise HomeError(f"cannot open the lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise HomeError(f"cannot lock {lock_path}: {exc}") from exc
        who = f"another octop2p node (pid {holder})" if holder else "another octop2p node"
        raise HomeLocked(
            f"{who} is using the home {home}; stop it first, or give this node "
            "its own home with --home DIR"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return HomeLock(home, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
