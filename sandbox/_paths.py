"""What a sandboxed child may read and write besides its job: Python's own files.

`landlock_paths(policy)` gives Landlock its (read-only, read-write) lists: the policy's
folders, Python's install and the system libraries it loads, /dev/null. Nothing that
covers a home folder, /etc, /tmp or /proc. The fork server resolves these once
(`remember`), before it forks; a child then resolves only what it adds, its job folder.
"""

from __future__ import annotations

import os
import pwd
import sys
import sysconfig

from ._policy import Policy

__all__ = ["landlock_paths", "python_read_paths", "remember"]


def _homes() -> frozenset[str]:
    # Read now, in the fork server, while HOME and /etc/passwd are still there to read.
    homes = {os.path.expanduser("~")}
    try:
        homes.add(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    return frozenset(os.path.realpath(h) for h in homes if os.path.isabs(h))


#: Folders an automatically added read path may never cover: a sys.path entry of "/"
#: or of a home folder would hand the job every file below it.
_NEVER_COVER = _homes() | frozenset(
    ("/root", "/home", "/etc", "/tmp", "/var", "/run", "/proc", "/sys", "/dev", "/boot")
)

#: System files Python needs once running, beyond its own folders:
_SYSTEM_READ = (
    "/usr/lib", "/lib", "/usr/lib64", "/lib64",  # libc and the libraries C extensions load
    "/usr/local/lib",  # in Debian's default ld.so.conf: libraries installed by hand
    "/etc/ld.so.cache",  # how the dynamic loader finds those libraries by name
    "/dev/urandom",  # the fallback of os.urandom and of libraries seeding themselves
    "/usr/share/zoneinfo",  # zoneinfo.ZoneInfo("Europe/Paris"): public tz data
)
#: The venv's site-packages; sysconfig is slow to ask, so ask once, in the fork server.
_SITE_PACKAGES = tuple(sysconfig.get_paths().get(key, "") for key in ("purelib", "platlib"))
#: Read-write on a file: code that silences output with open(os.devnull, "w").
_SYSTEM_WRITE = ("/dev/null",)


def _covers_sensitive(path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return path == "/" or any(p == path or p.startswith(prefix) for p in _NEVER_COVER)


#: Entry -> what `_readable` made of it, filled by `prepare` in the fork server before it
#: forks: a child then resolves only what is new (its job folder), not a dozen paths.
_RESOLVED: dict[tuple[str, bool], str | None] = {}


def _readable(entry: str, *, system: bool = False) -> str | None:
    """`entry` resolved, if it exists and may be read; None for a relative entry, a
    missing one, or (unless it is one of `_SYSTEM_READ`) one covering a sensitive folder."""
    key = (entry, system)
    if key in _RESOLVED:
        return _RESOLVED[key]
    if not entry or not os.path.isabs(entry):
        return None
    real = os.path.realpath(entry)
    if (not system and _covers_sensitive(real)) or not os.path.exists(real):
        return None
    return real


def _python_candidates() -> list[str]:
    """Where Python's own files may be, for `python_read_paths`."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += sys.path
    candidates += _SITE_PACKAGES
    if getattr(sys, "frozen", False):
        # A PyInstaller bundle keeps its pure-Python modules in an archive appended to
        # the program file itself, which lies beside sys.prefix (its _internal folder),
        # not in it: without it a child can import only what the fork server preloaded.
        # The file alone, not its folder, which may be a shared bin directory.
        candidates.append(sys.executable)
    return candidates


def python_read_paths() -> list[str]:
    """Python's own files, as this process finds them, for Landlock to allow reading.

    sys.prefix, sys.base_prefix, sys.exec_prefix (the venv and the interpreter's install),
    every absolute sys.path entry that exists (stdlib, lib-dynload, site-packages, an
    editable checkout, the job folder once the runtime puts it there), sysconfig's
    purelib/platlib (the venv's site-packages), in a frozen (PyInstaller) app the program
    file that holds the module archive, then `_SYSTEM_READ`. Relative entries
    ("" is the working directory) and anything that is "/" or covers a home folder,
    /etc, /tmp, /proc and the like are left out. Paths are resolved, made unique, and
    dropped when another path already covers them.
    """
    candidates = _python_candidates()
    found = [real for entry in candidates if (real := _readable(entry))]
    found += [real for path in _SYSTEM_READ if (real := _readable(path, system=True))]
    unique = sorted(set(found), key=len)
    kept: list[str] = []
    for path in unique:
        if not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def landlock_paths(policy: Policy) -> tuple[list[str], list[str]]:
    """(read-only, read-write) paths Landlock allows a child under `policy`.

    Read-only: `policy.read_paths` plus `python_read_paths()`. Read-write:
    `policy.write_paths` plus /dev/null. Nothing else: not /proc (so not /proc/self/mem
    nor /proc/<pid>/environ), not /tmp, not /etc beyond ld.so.cache, not the home folder.
    """
    read = list(policy.read_paths) + python_read_paths()
    write = list(policy.write_paths) + [p for p in _SYSTEM_WRITE if os.path.exists(p)]
    return read, write


def remember() -> None:
    """Resolve every path `python_read_paths` looks at now, for good: call it in the
    fork server before it forks, so each child inherits the answers."""
    _RESOLVED.update(((e, False), _readable(e)) for e in _python_candidates())
    _RESOLVED.update(((p, True), _readable(p, system=True)) for p in _SYSTEM_READ)
