"""Packing a job's results folder and delivering it where the user asked (docs/jobs.md, "Results").

OUT ending in ``.tar.gz`` receives the tarball; anything else is a folder the results are
unpacked into. A folder is only ever replaced if octop2p wrote it (it carries a marker
file); an unrelated, non-empty folder is refused so that nothing of the user's is lost.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tarfile
import time
from pathlib import Path

from octop2p.engine._limits import Limits
from octop2p.engine._unpack import unpack_tar
from octop2p.errors import UsageError

MARKER = ".octop2p-results.json"
#: Bytes a results tarball may unpack to, unless the node says otherwise: the most a
#: merger may write by default (merge_output_mb).
RESULTS_BYTES = Limits().merge_output_mb << 20
#: Files and folders in one results tarball.
MAX_RESULT_ENTRIES = 20_000


def default_out(job_name: str) -> Path:
    """``./<job name>-results/``."""
    return Path.cwd() / f"{job_name}-results"


def check_out(out: Path) -> None:
    """Refuse, before the job runs, an OUT that would overwrite something of the user's."""
    if str(out).endswith(".tar.gz"):
        if out.is_dir():
            raise UsageError(f"{out} is a folder; a .tar.gz OUT must be a file path")
        if not out.parent.is_dir():
            raise UsageError(
                f"the folder {out.parent} for -o {out} does not exist; create it first, "
                "or choose another -o (docs/jobs.md#results)"
            )
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if not out.exists() and not out.parent.is_dir():
        raise UsageError(
            f"the folder {out.parent} for -o {out} does not exist; create it first, "
            "or choose another -o (docs/jobs.md#results)"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UsageError(
            f"{out} exists, is not empty and was not written by octop2p; "
            "choose another -o, or empty it first"
        )


def pack(results_dir: Path) -> bytes:
    """The results folder as tar.gz bytes (paths relative to the folder)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(results_dir.rglob("*")):
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=str(path.relative_to(results_dir)), recursive=False)
    return buf.getvalue()


def output_usage(results_dir: Path, *, stop_after: int | None = None) -> tuple[int, int]:
    """(bytes, entries) in ``results_dir``: regular files' sizes, and files and folders.

    Both count because both cost: bytes on disk, and entries in every later walk, pack
    and removal (400,000 empty files kept a node busy for 40 s). The walk stops once
    it has seen more than ``stop_after`` entries, so a flood costs it no more than the
    limit it breaks; the bytes are then those seen so far. Symlinks are counted, never
    followed (a merger cannot make them; a folder a merger could not read is skipped).
    """
    total = entries = 0
    folders = [str(results_dir)]
    while folders:
        try:
            listing = os.scandir(folders.pop())
        except OSError:  # removed meanwhile, or not ours to read
            continue
        with listing:
            for entry in listing:
                entries += 1
                if stop_after is not None and entries > stop_after:
                    return total, entries
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except FileNotFoundError:
                    pass
    return total, entries




def unpack(data: bytes | Path, dest: Path, *, max_bytes: int = RESULTS_BYTES) -> None:
    """Unpack a results tar.gz (bytes or a file) into the new folder ``dest``, with the
    safe unpacker: only files and folders, nothing outside ``dest``."""
    unpack_tar(data, dest, max_bytes=max_bytes, max_entries=MAX_RESULT_ENTRIES, gz=True)


def _mark(out: Path, job_name: str, job_id: str) -> None:
    """Sign a results folder as octop2p's, so that a later run may replace it."""
    (out / MARKER).write_text(
        json.dumps({"job": job_id, "name": job_name, "finished": time.time()}) + "\n"
    )


def deliver(results_dir: Path, out: Path, *, job_name: str, job_id: str) -> Path:
    """Put the finished results at ``out``; returns the path written."""
    check_out(out)
    if str(out).endswith(".tar.gz"):
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(pack(results_dir))
        os.replace(tmp, out)
        return out
    if out.is_dir():
        shutil.rmtree(out)
    shutil.copytree(results_dir, out, symlinks=False)
    _mark(out, job_name, job_id)
    return out


def deliver_bytes(
    tarball: bytes, out: Path, *, job_name: str, job_id: str, max_bytes: int | None = None
) -> Path:
    """Like :func:`deliver`, from a tarball received from a chief.

    The tarball is unpacked into a fresh folder beside ``out`` and only then moved in its
    place, so a refused tarball (UnpackError) leaves ``out`` as it was.
    """
    check_out(out)
    if str(out).endswith(".tar.gz"):
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(tarball)
        os.replace(tmp, out)
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fresh = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    unpack(tarball, fresh, max_bytes=max_bytes or RESULTS_BYTES)
    try:
        _mark(fresh, job_name, job_id)
        if out.is_dir():
            shutil.rmtree(out)
        os.replace(fresh, out)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return out
