"""A job's record and its folder in the node's store (``jobs/<id>/``): what the node API
shows of a job, written whole or not at all, and read back (damaged or not) by a
restarted node (docs/architecture.md, "octop2p/")."""

from __future__ import annotations

import json
import logging
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from octop2p.engine._runner import Progress
from octop2p.net._store import StoreError, write_atomic
from protocol import (
    Error,
    ErrorCode,
    JobState,
    Message,
    PackageChunk,
    PackageRequest,
    content_hash,
)

if TYPE_CHECKING:
    from octop2p.net._hosted import NetworkJob
    from octop2p.net._peer import PeerLink

log = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """What the node API shows of a job."""

    job_id: bytes
    name: str
    state: JobState = JobState.QUEUED
    progress: Progress | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str = ""
    error_rule: str | None = None
    traceback: str = ""
    results: bytes | None = None  # the results tar.gz
    output: list[str] = field(default_factory=list)  # what final/merger printed (bounded)
    # The results tar.gz on disk instead (an archived job, a remote job's download): read
    # only when fetched, so that a node does not hold every old result in RAM.
    results_file: Path | None = None
    results_size: int | None = None
    refused: dict[str, str] = field(default_factory=dict)  # donor id -> why it refused
    #: The content hash ``results_file`` must have (None: unknown, checked as gzip only).
    results_digest: bytes | None = None
    #: A job resumed after its chief restarted: the results kept from before (else None).
    resumed: int | None = None

    @property
    def id_hex(self) -> str:
        return self.job_id.hex()

    @property
    def has_results(self) -> bool:
        """The job left a results tarball (in memory or on disk)."""
        return self.results is not None or self.results_file is not None

    def results_length(self) -> int | None:
        """The size of the results tarball, if any."""
        return len(self.results) if self.results is not None else self.results_size

    def read_results(self) -> bytes | None:
        """The results tarball's bytes (blocking when they are on disk: use a thread).

        A tarball on disk is checked first, against its hash when the journal has one,
        else as a whole gzip stream: damaged results raise StoreError, never go out."""
        if self.results is not None:
            return self.results
        if self.results_file is None:
            return None
        try:
            data = self.results_file.read_bytes()
        except OSError as exc:
            raise StoreError(f"the results of job {self.id_hex} cannot be read: "
                             f"{exc.strerror or exc}") from exc
        if self.results_digest is not None and content_hash(data) != self.results_digest:
            why = "do not match the hash recorded when the job finished"
        else:
            why = _gzip_damage(data) if self.results_digest is None else ""
        if why:
            raise StoreError(f"the results of job {self.id_hex} are damaged on disk "
                             f"({self.results_file}: {why}); they were not delivered; "
                             "run the job again")
        return data


def _gzip_damage(data: bytes) -> str:
    """What is wrong with a gzip stream (empty when it is whole and its CRC matches),
    read in chunks so that a bomb costs no memory."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        for start in range(0, len(data), 1 << 20):
            inflater.decompress(data[start : start + (1 << 20)], 1 << 20)
            while inflater.unconsumed_tail:
                inflater.decompress(inflater.unconsumed_tail, 1 << 20)
        inflater.flush()
    except zlib.error as exc:
        return f"not a valid gzip stream: {exc}"
    return "" if inflater.eof else "the gzip stream is cut short"



class JobStore:
    """One job's folder in the node's store (``jobs/<id>/``).

    ``package.tar`` (the job's files, by which workers fetch it), ``job.json`` (a journal
    of its state: what it is, where it stands, who did what, rewritten atomically as it
    runs) and ``results.tar.gz`` once done. A restarted node reads them back, so jobs,
    their status and their results outlive it. Every file is written whole or not at all
    (:func:`write_atomic`); a full disk raises StoreError, which fails one job only.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._journal_failed = False
        # job.json is rewritten in a thread, one write at a time (``write_atomic`` uses one
        # temporary name per file): the newest state waits while a write is in flight.
        self._journal_lock = trio.Lock()
        self._journal_next: bytes | None = None
        self._journal_writer = False  # a `_write_pending` task is on its way
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StoreError(f"could not create {folder}: {exc.strerror or exc}") from exc

    @classmethod
    async def start(cls, folder: Path, job: NetworkJob) -> JobStore:
        """The store of a job about to run: its package (kept from before when the job
        resumes), first journal and ``work/``, written in a thread (each write ends with
        fsync).

        Raises StoreError (disk full, read-only) before anything runs."""
        journal = cls.journal(job)  # on the event loop: it reads the job's state
        tar = None if job.record.resumed is not None else job.tar
        return await trio.to_thread.run_sync(cls._start, folder, tar, journal)

    @classmethod
    def _start(cls, folder: Path, tar: bytes | None, journal: bytes) -> JobStore:
        store = cls(folder)
        if tar is not None:
            store.save_package(tar)
        write_atomic(folder / "job.json", journal)
        try:
            (folder / "work").mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"could not create {folder / 'work'}: {exc.strerror}") from exc
        return store

    def save_package(self, tar: bytes) -> None:
        write_atomic(self.folder / "package.tar", tar)

    def save_results(self, tarball: bytes) -> None:
        try:
            write_atomic(self.folder / "results.tar.gz", tarball)
        except StoreError as exc:
            raise StoreError(f"the job finished, but the chief could not keep its results: "
                             f"{exc}") from exc

    def journal_soon(self, job: NetworkJob, nursery: trio.Nursery) -> None:
        """Rewrite ``job.json`` soon, in a thread of a task of ``nursery`` (for the job's
        progress, on the event loop). While a write is in flight, the newest state waits
        and is written after it; states in between are skipped."""
        self._journal_next = self.journal(job)  # on the event loop: it reads the job
        if not self._journal_writer:
            self._journal_writer = True
            nursery.start_soon(self._write_pending, job.record.id_hex)

    async def _write_pending(self, job_hex: str) -> None:
        try:
            while self._journal_next is not None:
                data, self._journal_next = self._journal_next, None
                async with self._journal_lock:
                    await trio.to_thread.run_sync(self._write_journal, data, job_hex)
        finally:
            self._journal_writer = False

    async def write_journal(self, job: NetworkJob) -> None:
        """Rewrite ``job.json`` with the job as it stands, after any write in flight, in a
        thread; shielded, so that a node that stops still records where the job stood."""
        data = self.journal(job)
        self._journal_next = None  # older than this write: never written after it
        with trio.CancelScope(shield=True):
            async with self._journal_lock:
                await trio.to_thread.run_sync(self._write_journal, data, job.record.id_hex)

    def _write_journal(self, data: bytes, job_hex: str) -> None:
        """Write ``job.json`` (in a thread). A failed write is logged once and never
        raised: the journal is what a restarted node shows, and a full disk must not stop
        the job (or, from the job's last `finally`, the node)."""
        try:
            write_atomic(self.folder / "job.json", data)
        except StoreError as exc:
            if not self._journal_failed:
                log.warning("job %s: %s; `octop2p jobs` after a restart may not show it "
                            "as it is", job_hex, exc)
            self._journal_failed = True
        else:
            self._journal_failed = False

    @staticmethod
    def journal(job: NetworkJob) -> bytes:
        """``job.json``'s bytes for the job as it stands."""
        record, progress = job.record, job.record.progress
        journal = {
            "job": record.id_hex,
            "name": record.name,
            "kind": job.spec.kind,
            "script": job.spec.script,
            "options": job.spec.options.to_dict(),
            "package": job.package_hash.hex(),
            "submitter": job.submitter.hex(),
            "state": record.state.value,
            "started": record.started,
            "finished": record.finished,
            "phase": progress.phase if progress else "",
            "done": progress.done if progress else 0,
            "total": progress.total if progress else None,
            "workers": dict(progress.workers) if progress else {},
            "error": record.error,
            "rule": record.error_rule,
            "traceback": record.traceback,
            "output": "".join(record.output)[: 1 << 20],
            "results_hash": job.results_hash.hex() if job.results_hash else None,
            # What a restarted node needs to resume the job as its submitter sent it.
            "package_author": job.package_envelope.author.hex(),
            "package_signature": job.package_envelope.signature.hex(),
            "resumed": record.resumed,
        }
        return json.dumps(journal).encode()

    @staticmethod
    def load(folder: Path, *, resume: bool = False) -> ArchivedJob | None:
        """A job a previous run of the node left in the store.

        A damaged ``job.json`` (unparseable, a field of the wrong type) gives a record
        that says so, with the results if ``results.tar.gz`` is there (checked when
        fetched); None only for a folder that is no job's (its name is no job id).
        A job that was still running is marked ``resumable`` when ``resume`` is set and
        its package is there; else it is marked failed ("interrupted").
        """
        try:
            job_id = bytes.fromhex(folder.name)
        except ValueError:
            return None
        if len(job_id) != 16 or not folder.is_dir():
            return None
        try:
            journal = json.loads((folder / "job.json").read_bytes())
            archived, running = _archived(folder, journal)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return _damaged(folder, job_id, exc)
        if running:
            if resume and (folder / "package.tar").is_file():
                archived.journal = journal
                # Not ended: it is taken up at this start, and `done` is set once the
                # resumed job stands in its place (or it turns out it cannot be).
                archived.done = trio.Event()
            else:
                _interrupted(folder, archived.record, resume=resume)
        return archived


def damage_of(folder: Path) -> str | None:
    """Why the job record in ``folder`` is damaged, or None when it reads back whole.
    For `octop2p doctor`: it changes nothing on disk."""
    try:
        _archived(folder, json.loads((folder / "job.json").read_bytes()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _why(exc)
    return None


def _archived(folder: Path, journal: Any) -> tuple[ArchivedJob, bool]:
    """The record of a readable ``job.json``, and whether it was still running;
    ValueError, KeyError or TypeError for a wrong or missing field."""
    if not isinstance(journal, dict):
        raise TypeError("job.json is not a JSON object")
    get = _Fields(journal)
    record = JobRecord(bytes.fromhex(get("job", str)), get("name", str))
    if record.id_hex != folder.name:
        raise ValueError(f"job.json names job {record.id_hex[:32]}, not {folder.name}")
    state = JobState(get("state", str))
    record.started = float(get("started", (int, float), 0.0))
    record.finished = get("finished", (int, float, type(None)), None)
    record.error_rule = get("rule", (str, type(None)), None)
    record.traceback = get("traceback", (str, type(None)), "") or ""
    record.output = [get("output", (str, type(None)), "") or ""]
    workers = get("workers", (dict, type(None)), {}) or {}
    if not all(isinstance(k, str) and type(v) is int for k, v in workers.items()):
        raise TypeError("job.json: 'workers' is not a map of node ids to counts")
    record.progress = Progress(
        phase=get("phase", (str, type(None)), "") or "",
        done=get("done", (int, type(None)), 0) or 0,
        total=get("total", (int, type(None)), None),
        workers=workers,
    )
    error = get("error", (str, type(None)), "") or ""
    record.resumed = get("resumed", (int, type(None)), None)
    digest_hex = get("results_hash", (str, type(None)), None)
    digest = bytes.fromhex(digest_hex) if digest_hex is not None else None
    record.state, record.error = state, error
    results = folder / "results.tar.gz"
    if state is JobState.DONE and results.is_file():
        record.results_file, record.results_size = results, results.stat().st_size
        record.results_digest = digest
    running = state not in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
    return ArchivedJob(record, digest), running


class _Fields:
    """Fields of a journal, each checked against its type (a wrong type is damage)."""

    _MISSING = object()

    def __init__(self, journal: dict[str, Any]) -> None:
        self.journal = journal

    def __call__(self, key: str, kind: Any, default: Any = _MISSING) -> Any:
        if key not in self.journal:
            if default is self._MISSING:
                raise KeyError(f"job.json has no {key!r}")
            return default
        value = self.journal[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"job.json: {key!r} is a {type(value).__name__}")
        return value


def _interrupted(folder: Path, record: JobRecord, *, resume: bool = True,
                 why: str = "") -> None:
    """A job that was running when the node stopped and will not go on: its scratch
    folders and journal are removed, and its record says why."""
    for name in ("work", "journal", "submitted"):
        shutil.rmtree(folder / name, ignore_errors=True)
    record.state = JobState.FAILED
    record.finished = record.finished or time.time()
    if why:
        record.error = f"interrupted: the node stopped before the job finished, and it " \
            f"could not be resumed ({why}); submit it again"
    elif not resume:
        record.error = ("interrupted: the node stopped before the job finished, and was "
                        "started with --no-resume; submit it again")
    else:
        record.error = "interrupted: the node stopped before the job finished; submit it again"
    try:  # written, so that the next start does not take it up again
        journal = json.loads((folder / "job.json").read_bytes())
        journal.update(state=record.state.value, error=record.error, finished=record.finished)
        write_atomic(folder / "job.json", json.dumps(journal).encode())
    except (OSError, ValueError, AttributeError, StoreError) as exc:
        log.warning("job %s: could not record that it was interrupted: %s", record.id_hex, exc)


def _why(exc: BaseException) -> str:
    """One line on what is wrong with a ``job.json``."""
    if isinstance(exc, json.JSONDecodeError):
        return f"job.json is not valid JSON ({exc.msg} at byte {exc.pos})"
    if isinstance(exc, OSError):
        return f"job.json cannot be read: {exc.strerror or exc}"
    why = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return why.splitlines()[0][:200] if why.strip() else type(exc).__name__


def _damaged(folder: Path, job_id: bytes, exc: BaseException) -> ArchivedJob:
    """A job whose ``job.json`` cannot be read: listed as such, its results kept."""
    why = _why(exc)
    record = JobRecord(job_id, "?")
    results = folder / "results.tar.gz"
    if results.is_file():
        record.state = JobState.DONE
        record.results_file, record.results_size = results, results.stat().st_size
        record.error = (f"damaged record ({why}); its results.tar.gz is kept and checked "
                        f"when fetched: `octop2p fetch {record.id_hex[:12]}`")
    else:
        record.state = JobState.FAILED
        record.error = f"damaged record ({why}); it left no results"
    log.warning("job %s: %s", record.id_hex, record.error)
    archived = ArchivedJob(record)
    archived.damage = why
    return archived


class ArchivedJob:
    """A finished job read back from the store: listed, shown and fetched, never run."""

    def __init__(self, record: JobRecord, results_hash: bytes | None = None) -> None:
        self.record = record
        self.job_id = record.job_id
        self.done = trio.Event()
        self.done.set()
        self._results_hash = results_hash
        #: Why its ``job.json`` could not be read, for a damaged record (else None).
        self.damage: str | None = None
        #: A job that was running when the node stopped: its ``job.json``, for resuming.
        self.journal: dict[str, Any] | None = None

    def interrupted(self, folder: Path, why: str) -> None:
        """It cannot be resumed after all: failed, with ``why``, and written so."""
        self.journal = None
        _interrupted(folder, self.record, why=why)

    @property
    def results_hash(self) -> bytes | None:
        """The results' content hash: from the journal, or hashed once when first asked
        (journals of older nodes lack it, damaged records too). Damaged results have
        none: they are offered to no one."""
        if self._results_hash is None and self.record.has_results:
            try:
                self._results_hash = content_hash(self.record.read_results() or b"")
            except StoreError as exc:
                log.warning("job %s: %s", self.record.id_hex, exc)
                self.record.results_file = None
                self.record.error = str(exc)
        return self._results_hash

    def cancel(self) -> None:
        """Nothing to stop."""

    def lost(self, link: PeerLink) -> None:
        """No workers."""

    async def offer(self, link: PeerLink) -> None:
        """Not offered to workers."""

    async def handle(self, link: PeerLink, message: Message) -> None:
        await link.send(
            Error(code=ErrorCode.NOT_FOUND, reason="that job is over", job_id=self.job_id)
        )

    def chunk(self, request: PackageRequest) -> PackageChunk | None:
        record = self.record
        if record.results_file is None or self.results_hash != request.package:
            return None
        # One chunk (at most MAX_CHUNK) read from disk, never the whole file.
        with open(record.results_file, "rb") as f:
            f.seek(request.offset)
            data = f.read(request.length)
        return PackageChunk(
            package=request.package, offset=request.offset, total=record.results_size or 0,
            data=data,
        )
