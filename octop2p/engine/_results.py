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
from collections.abc import Callable
from pathlib import Path

from octop2p.engine._limits import Limits
from octop2p.engine._unpack import unpack_tar
from octop2p.errors import JobFailed, OctoError, UsageError

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


def check_output_quota(results_dir: Path, limits: Limits) -> None:
    """The merger's output stays under merge_output_mb and merge_output_files
    (checked while it runs, and always after finalize and final)."""
    limit = limits.merge_output_mb << 20
    most = limits.merge_output_files
    total, entries = output_usage(results_dir, stop_after=most)
    if entries > most:
        raise JobFailed(
            message=f"the merger made more than {most} files and folders in results_dir; "
            f"this job's limit is {most} (merge_output_files = {most})",
            rule="merge output",
        )
    if total > limit:
        raise JobFailed(
            message=f"the merger wrote {total} bytes to results_dir; this job's limit is "
            f"{limit} (merge_output_mb = {limits.merge_output_mb})",
            rule="merge output",
        )


def unpack(data: bytes | Path, dest: Path, *, max_bytes: int = RESULTS_BYTES) -> None:
    """Unpack a results tar.gz (bytes or a file) into the new folder ``dest``, with the
    safe unpacker: only files and folders, nothing outside ``dest``."""
    unpack_tar(data, dest, max_bytes=max_bytes, max_entries=MAX_RESULT_ENTRIES, gz=True)


class DeliveryError(OctoError):
    """The results could not be written to OUT (disk full, read-only, gone): nothing was
    left there, and the job keeps its results where it ran."""


def _mark(out: Path, job_name: str, job_id: str) -> None:
    """Sign a results folder as octop2p's, so that a later run may replace it."""
    (out / MARKER).write_text(
        json.dumps({"job": job_id, "name": job_name, "finished": time.time()}) + "\n"
    )


def deliver(results_dir: Path, out: Path, *, job_name: str, job_id: str,
            kept: str = "") -> Path:
    """Put the finished results at ``out``; returns the path written.

    Whole or not at all: written under a temporary name beside ``out``, synced, then
    renamed into place. A failure raises DeliveryError (one line; ``kept`` says where
    the results still are) and leaves ``out`` as it was.
    """
    check_out(out)
    if str(out).endswith(".tar.gz"):
        return _deliver_file(lambda: pack(results_dir), out, kept)
    return _deliver_folder(lambda fresh: shutil.copytree(results_dir, fresh, symlinks=False),
                           out, job_name, job_id, kept)


def deliver_bytes(
    tarball: bytes, out: Path, *, job_name: str, job_id: str, max_bytes: int | None = None
) -> Path:
    """Like :func:`deliver`, from a tarball received from a node.

    The tarball is unpacked into a fresh folder beside ``out`` and only then moved in its
    place, so a refused tarball (UnpackError) or a full disk leaves ``out`` as it was;
    the job stays on the node, to fetch again.
    """
    check_out(out)
    kept = f"the job keeps its results on the node: `octop2p fetch {job_id} -o ANOTHER_PATH`"
    cap = max_bytes or RESULTS_BYTES
    try:
        if str(out).endswith(".tar.gz"):
            return _deliver_file(lambda: tarball, out, kept)
        return _deliver_folder(lambda fresh: unpack(tarball, fresh, max_bytes=cap),
                               out, job_name, job_id, kept)
    except DeliveryError as exc:
        exc.job = job_id  # for --json: the job to fetch again
        raise


def _deliver_file(data: Callable[[], bytes], out: Path, kept: str) -> Path:
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.part")
    try:
        write_synced(tmp, data())
        os.replace(tmp, out)
        sync_folder(out.parent)
    except OSError as exc:
        discard(tmp)
        raise _failed(out, exc, kept) from None
    return out


def _deliver_folder(fill: Callable[[Path], object], out: Path, job_name: str, job_id: str,
                    kept: str) -> Path:
    tag = secrets.token_hex(4)
    fresh = out.with_name(f".{out.name}.{tag}.part")
    old = out.with_name(f".{out.name}.{tag}.old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fill(fresh)
        _mark(fresh, job_name, job_id)
        sync_tree(fresh)
        if out.is_dir():  # an earlier octop2p results folder (check_out saw its marker)
            os.replace(out, old)
        os.replace(fresh, out)
        sync_folder(out.parent)
    except OSError as exc:
        if old.exists() and not out.exists():
            try:
                os.replace(old, out)  # put the earlier results back
            except OSError:
                old = fresh  # keep them under the .old name rather than remove them
        raise _failed(out, exc, kept) from None
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return out


def _failed(out: Path, exc: OSError, kept: str) -> DeliveryError:
    why = exc.strerror or str(exc)
    return DeliveryError(f"could not write the results to {out}: {why}; nothing was left "
                         f"there{'; ' + kept if kept else ''} (docs/jobs.md#results)")


def sync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder``: renamed into place only once its
    bytes are on disk, it is never found truncated after a power cut."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        sync_folder(Path(root))


def discard(path: Path) -> None:
    """Remove a temporary file if it is there and the disk lets us (a read-only one
    may not even let us look)."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def write_synced(path: Path, data: bytes) -> None:
    """Write the new file ``path`` and fsync it (its bytes on disk before any rename)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
