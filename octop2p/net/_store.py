"""Bounds on what a node keeps on disk for others: quotas with eviction of the oldest.

``packages/`` (packages this node fetched as a donor) and ``jobs/`` (jobs it was chief
of, with their results) grow with every job a member sends. Each has a quota in
config.toml (``packages_mb``, ``jobs_mb``); when a new entry comes in, the oldest
entries not in use are removed until the folder fits (docs/security.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import trio

from octop2p.engine._results import discard, sync_folder, write_synced
from octop2p.errors import OctoError
from protocol._hashes import HASH_BYTES, PERSON_CONTENT

log = logging.getLogger(__name__)


def content_hasher() -> hashlib.blake2b:
    """An incremental ``protocol.content_hash``: hash a download as it arrives."""
    return hashlib.blake2b(digest_size=HASH_BYTES, person=PERSON_CONTENT)


class StoreError(OctoError):
    """The node's disk refused a write (full, read-only, gone): it fails the one job it
    hits, never the node."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary name in the same folder, fsync,
    rename, fsync of the folder. A crash leaves the old file or the new one, never a
    truncated one; a full disk leaves the old one and raises StoreError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        discard(tmp)  # left by a crash of this very process id
        write_synced(tmp, data)
        os.replace(tmp, path)
        sync_folder(path.parent)
    except OSError as exc:
        discard(tmp)
        raise StoreError(f"could not write {path}: {exc.strerror or exc}") from exc


def _size(path: Path) -> int:
    """Bytes under ``path``, links not followed."""
    try:
        st = path.lstat()
    except OSError:
        return 0
    if not path.is_dir() or path.is_symlink():
        return st.st_size
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def evict_oldest(folder: Path, quota: int, keep: Iterable[str] = ()) -> list[str]:
    """Remove the oldest entries of ``folder`` until it holds at most ``quota`` bytes.

    An entry is every name sharing a stem (``<hash>`` and ``<hash>.tar``); names starting
    with a dot (downloads under way) and stems in ``keep`` are never removed. Returns
    the stems removed, oldest first.
    """
    groups: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if not path.name.startswith("."):
            groups.setdefault(path.name.split(".")[0], []).append(path)
    sizes = {stem: sum(_size(p) for p in paths) for stem, paths in groups.items()}
    total = sum(sizes.values())
    kept = set(keep)
    removed: list[str] = []
    by_age = sorted(groups, key=lambda stem: max(_mtime(p) for p in groups[stem]))
    for stem in by_age:
        if total <= quota:
            break
        if stem in kept:
            continue
        for path in groups[stem]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        total -= sizes[stem]
        removed.append(stem)
    if removed:
        log.info("removed %d old entries of %s to keep it under %d MB", len(removed), folder,
                 quota >> 20)
    return removed


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


async def remove_tree(path: Path) -> None:
    """``shutil.rmtree`` in a thread, finished even when the caller is being cancelled."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(partial(shutil.rmtree, path, ignore_errors=True))
