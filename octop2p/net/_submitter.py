"""Submitting a job to another node (``octop2p submit --chief NODE_ID``), and the chief's
side of such a submission.

The submitter signs the package tar (a PACKAGE envelope) and sends it in a
``JobSubmit``; the chief checks it exactly as a local submission and becomes the job's
chief, with the submitter's signature carried to every worker. The submitter follows
the job with ``StatusRequest`` and fetches the results tarball by its content hash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from octop2p.engine._package import PACKAGE_BYTES, load_job, pack_package, renamed, with_folder
from octop2p.engine._results import MAX_RESULT_ENTRIES
from octop2p.engine._runner import Progress
from octop2p.engine._unpack import UnpackError, plain_name, unpack_tar
from octop2p.errors import JobRefused, NoNodeError, OctoError
from octop2p.net._fetch import WorkRefused
from octop2p.net._hosted import JobRecord, NetworkJob
from octop2p.net._peer import LinkClosed, PeerLink
from octop2p.net._store import StoreError, evict_oldest, write_atomic
from protocol import (
    AuthMode,
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    EventKind,
    JobEvent,
    JobKind,
    JobState,
    JobStatus,
    JobSubmit,
    Message,
    PackageChunk,
    PackageRequest,
    StatusRequest,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from octop2p.net._donor import WorkerService
    from octop2p.net._node import Node

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
#: A chief silent this long on a live link is taken as lost (and waited for).
REPLY_SECONDS = 60.0
_FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)
#: Characters of a job's prints per `JobEvent` (the message allows 65536; a character
#: may take four bytes).
EVENT_TEXT = 16384
_ROLE = re.compile(r"[a-z_]{1,32}")


def status_of(job: Any) -> JobStatus:
    """The ``JobStatus`` message for one of this node's jobs."""
    record: JobRecord = job.record
    progress = record.progress
    digest = getattr(job, "results_hash", None)
    return JobStatus(
        job_id=record.job_id, name=record.name[:128], state=record.state,
        fragments_done=progress.done if progress else 0,
        fragments_total=progress.total if progress else None,
        workers=len(progress.workers) if progress else 0,
        results=digest if record.has_results else None,
        results_size=record.results_length(),
        message=(record.error or "")[:4096],
    )


class FollowerNode(Protocol):
    """What a :class:`RemoteJob` uses of its node (a :class:`~octop2p.net._node.Node`)."""

    @property
    def settings(self) -> Any: ...  # ``NodeSettings``: ``reattach_seconds``
    @property
    def jobs_dir(self) -> Path: ...  # the job's record and results are kept here
    @property
    def worker(self) -> WorkerService: ...  # downloads the results by content hash

    def links(self) -> list[PeerLink]:
        """Every open link (the chief's, once it is back)."""

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a node event ("job", "progress", "output", "notice", ...)."""

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the node."""


class RemoteJob:
    """A job this node submitted to another chief, as the node API shows it.

    It outlives the link to its chief: when the link drops, it says so, waits up to
    ``reattach_seconds`` for a new link to the same node (the node redials static peers;
    mDNS finds it again), then follows the job to its results, which it keeps in the
    store (``jobs/<id>/``) for `octop2p fetch` (docs/jobs.md, "When things break").
    """

    def __init__(
        self, node: FollowerNode, link: PeerLink, job_id: bytes, name: str,
        results_mb: int = 1024,
    ) -> None:
        self.node = node
        #: The most the chief's results may be: the job's merge quota, with tar and gzip
        #: framing (a chief announcing more is refused before a byte is fetched).
        self.results_cap = (results_mb << 20) + (MAX_RESULT_ENTRIES + 2) * 1536 + (1 << 20)
        self.chief = link.peer_id
        self._link = link
        self.reattach_seconds: float = getattr(node.settings, "reattach_seconds", 600)
        self.job_id = job_id
        self.record = JobRecord(job_id, name, state=JobState.QUEUED)
        self.record.progress = Progress(phase="remote")
        self.done = trio.Event()
        self.results_hash: bytes | None = None
        self._replies: trio.MemorySendChannel[Message]
        self._replies, self._inbox = trio.open_memory_channel[Message](16)

    @property
    def link(self) -> PeerLink:
        """The link to the chief: the open one, else the last one (closed)."""
        for link in self.node.links():
            if link.peer_id == self.chief:
                self._link = link
                break
        return self._link

    def reply(self, message: Message) -> None:
        try:
            self._replies.send_nowait(message)
        except trio.WouldBlock:
            pass

    async def follow(self) -> None:
        """Poll the chief until the job ends, then fetch its results; a lost link is
        waited for (``reattach_seconds``), not a failure."""
        record = self.record
        try:
            await self._follow()
        except Exception as exc:  # noqa: BLE001 - reported to the user, never the node's end
            record.state = JobState.FAILED
            record.error = record.error or str(exc) or repr(exc)
        finally:
            record.finished = time.time()
            with trio.CancelScope(shield=True):
                await self._save()
            self.done.set()
            self.node.emit("job", job=record.id_hex, state=record.state.value, name=record.name,
                           error=record.error)

    async def _follow(self) -> None:
        record = self.record
        asked = False  # the first answer is the chief's reply to JobSubmit
        while True:
            link = self.link
            try:
                if asked:
                    await link.send(StatusRequest(job_id=self.job_id))
                asked = True
                message = await self._next(link)
                if isinstance(message, Error):
                    record.state, record.error = JobState.FAILED, message.reason
                    return
                if isinstance(message, JobStatus) and self._update(message):
                    if message.state is JobState.DONE and message.results is not None:
                        await self._download(message.results, message.results_size or 0)
                    return
            except LinkClosed:
                await self._wait_for_link(link)
                continue
            await trio.sleep(POLL_SECONDS)

    def _update(self, message: JobStatus) -> bool:
        """Take the chief's status of the job; True once the job has ended there."""
        record = self.record
        record.state = message.state
        assert record.progress is not None
        record.progress.done = message.fragments_done
        record.progress.total = message.fragments_total
        record.progress.waiting = ""
        self.node.emit("progress", job=record.id_hex, phase="remote",
                       done=message.fragments_done, total=message.fragments_total, workers={})
        if message.state in _FINISHED:
            record.error = message.message
            return True
        return False

    def on_event(self, message: JobEvent) -> None:
        """What the chief shows of the job as it runs, shown here as `octop2p run` would:
        the role's prints as ``output`` events, a lowered limit as a ``warning``."""
        job = self.record.id_hex
        if message.kind is EventKind.WARNING:
            self.node.emit("warning", job=job, text=message.text)
        elif message.kind is EventKind.OUTPUT:
            where, _, text = message.text.partition("\n")
            if not _ROLE.fullmatch(where):
                where = "chief"  # a role is a plain word: no markup reaches the terminal
            if where == "final" and sum(map(len, self.record.output)) < 1 << 20:
                self.record.output.append(text)
            self.node.emit("output", job=job, where=where, text=text)

    async def _wait_for_link(self, lost: PeerLink) -> None:
        """Wait for a new link to the chief; OctoError after ``reattach_seconds``."""
        text = (f"lost the link to chief {lost.short}; waiting up to "
                f"{self.reattach_seconds:g} s for it to come back")
        self._notice(text)
        with trio.move_on_after(self.reattach_seconds):
            while True:
                link = self.link
                if link is not lost and not link.closed_event.is_set():
                    self._notice(f"the link to chief {lost.short} is back; following the job")
                    return
                await trio.sleep(POLL_SECONDS)
        raise OctoError(
            f"lost the link to chief {lost.short} and it did not come back within "
            f"{self.reattach_seconds:g} s (reattach_seconds in config.toml); the chief may "
            "still finish the job, but this node stopped following it"
        )

    def _notice(self, text: str) -> None:
        """One line for the node's log, `submit`'s output and `status`."""
        log.warning("job %s: %s", self.record.id_hex, text)
        assert self.record.progress is not None
        self.record.progress.waiting = text
        self.node.emit("notice", job=self.record.id_hex, text=text)

    async def _download(self, digest: bytes, size: int) -> None:
        """The results, streamed to the job's folder against the job's results cap,
        under a temporary name renamed once whole; a lost link is waited for."""
        folder = self.node.jobs_dir / self.job_id.hex()
        await trio.to_thread.run_sync(partial(folder.mkdir, mode=0o700, exist_ok=True))
        path, part = folder / "results.tar.gz", folder / ".results.tar.gz.part"
        while True:
            link = self.link
            await trio.to_thread.run_sync(partial(part.unlink, missing_ok=True))
            try:
                await self.node.worker.download(link, digest, size, part, cap=self.results_cap)
                break
            except LinkClosed:
                await self._wait_for_link(link)
            except WorkRefused as exc:
                if link.closed_event.is_set():  # the link died while a chunk was awaited
                    await self._wait_for_link(link)
                    continue
                self.record.state = JobState.FAILED
                self.record.error = f"the results of chief {link.short} were refused: {exc}"
                return
        await trio.to_thread.run_sync(os.replace, part, path)
        self.results_hash = digest
        self.record.results_file, self.record.results_size = path, size
        self.record.results_digest = digest

    async def _next(self, link: PeerLink) -> Message:
        """The chief's next answer; LinkClosed when the link drops or the chief stays
        silent for REPLY_SECONDS."""
        deadline = trio.current_time() + REPLY_SECONDS
        while trio.current_time() < deadline:
            with trio.move_on_after(POLL_SECONDS):
                return await self._inbox.receive()
            if link.closed_event.is_set() or link is not self.link:
                raise LinkClosed("the link closed")
        raise LinkClosed(f"the chief did not answer for {REPLY_SECONDS:g} s")

    async def _save(self) -> None:
        """The job's record in the store, so a restarted node still lists and fetches it."""
        record, progress = self.record, self.record.progress
        journal = {
            "job": record.id_hex, "name": record.name, "state": record.state.value,
            "started": record.started, "finished": record.finished, "phase": "remote",
            "done": progress.done if progress else 0,
            "total": progress.total if progress else None,
            "error": record.error, "chief": self.chief,
            "results_hash": self.results_hash.hex() if self.results_hash else None,
        }
        folder = self.node.jobs_dir / record.id_hex
        try:
            await trio.to_thread.run_sync(partial(folder.mkdir, mode=0o700, exist_ok=True))
            await trio.to_thread.run_sync(
                write_atomic, folder / "job.json", json.dumps(journal).encode())
        except (OSError, StoreError) as exc:
            log.warning("job %s: could not keep its record: %s", record.id_hex, exc)

    def cancel(self) -> None:
        self.node.spawn(self._send_cancel)

    async def _send_cancel(self) -> None:
        try:
            await self.link.send(Cancel(job_id=self.job_id, reason="cancelled by the submitter"))
        except LinkClosed:
            pass

    def lost(self, link: PeerLink) -> None:
        """Links come and go; the poller notices a lost chief when it sends."""

    async def offer(self, link: PeerLink) -> None:
        """A remote job is not offered to workers by this node."""

    async def handle(self, link: PeerLink, message: Message) -> None:
        """Workers do not talk to the submitter."""

    def chunk(self, request: PackageRequest) -> PackageChunk | None:
        return None


async def submit_remote(node: Node, path: Path, chief: str) -> RemoteJob:
    """Validate ``path`` here, then send it to the linked node ``chief`` to run."""
    # The whole id: a prefix could be ground by an attacker's key to match first.
    links = [link for link in node.links() if link.peer_id == chief]
    if len(links) != 1:
        raise NoNodeError(f"no linked peer with id {chief} (see `octop2p peers`)")
    link = links[0]
    spec = await trio.to_thread.run_sync(load_job, path, node.limits)
    spec = await trio.to_thread.run_sync(with_folder, spec)
    tar = await trio.to_thread.run_sync(pack_package, spec)
    job_id = secrets.token_bytes(16)
    envelope = Envelope.sign(node.identity, EnvelopeKind.PACKAGE, job_id, 0, tar)
    job = RemoteJob(node, link, job_id, spec.options.name,
                    results_mb=spec.options.limits.merge_output_mb)
    node.jobs[job_id] = job  # type: ignore[assignment]
    await link.send(JobSubmit(
        package=envelope, kind=JobKind.PACKAGE if spec.kind == "package" else JobKind.SCRIPT,
        name=spec.options.name[:128], script=spec.script, options=spec.options.to_dict(),
    ))
    node.spawn(job.follow)
    return job


async def accept_submission(node: Node, link: PeerLink, message: JobSubmit) -> None:
    """A swarm member asks this node to be chief of its job: check it as a local one."""
    envelope = message.package
    reason = _submission_refused(node, link, message)
    if reason is not None:
        code, text = reason
        await link.send(Error(code=code, reason=text, job_id=envelope.job_id))
        return
    job_dir = node.jobs_dir / envelope.job_id.hex()
    folder = job_dir / "submitted"
    try:
        await evict_jobs(node)
        job_dir.mkdir(mode=0o700)
        await trio.to_thread.run_sync(partial(
            unpack_tar, envelope.payload, folder, max_bytes=PACKAGE_BYTES))
        script = message.script if message.kind is JobKind.SCRIPT else None
        target = folder / script if script else folder
        spec = await trio.to_thread.run_sync(load_job, target, node.limits)
        if plain_name(message.name):
            spec = renamed(spec, message.name)
    except (JobRefused, UnpackError, OSError) as exc:
        await trio.to_thread.run_sync(partial(shutil.rmtree, job_dir, ignore_errors=True))
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            log.warning("could not store job %s of %s: %s", envelope.job_id.hex(), link.short, exc)
            text = "the chief could not store the package (see its log)"
        else:
            text = _without_paths(str(exc), folder, node)
        await link.send(Error(code=ErrorCode.REFUSED, reason=text[:4096], job_id=envelope.job_id))
        return
    job = NetworkJob(node, spec, job_id=envelope.job_id, package_envelope=envelope,
                     tar=envelope.payload)
    node.jobs[job.job_id] = job
    log.info("chief of job %s (%s) submitted by %s", spec.options.name, job.record.id_hex,
             link.short)
    # Listen before the job starts: its splitter prints within milliseconds.
    node.spawn(partial(forward_events, node, job, link.peer_id, node.subscribe(),
                       list(spec.warnings)))
    node.spawn(job.run, node.jobs_dir / job.record.id_hex)
    await link.send(status_of(job))


async def forward_events(node: Node, job: NetworkJob, submitter: str,
                         events: trio.MemoryReceiveChannel[dict[str, Any]],
                         warnings: list[str]) -> None:
    """What `octop2p run` would show of ``job`` (its limits lowered, what its splitter,
    merger and `final` print), sent to the submitter as `JobEvent`s while it runs. A
    submitter away for a moment misses what was printed then (`final`'s prints stay in
    the results' output.txt)."""
    seq = 0

    async def send(kind: EventKind, text: str) -> None:
        nonlocal seq
        for link in node.links():
            if link.peer_id == submitter:
                with contextlib.suppress(LinkClosed):
                    await link.send(JobEvent(job_id=job.job_id, seq=seq, kind=kind, text=text))
                seq += 1
                return

    with events:
        for warning in warnings:
            await send(EventKind.WARNING, warning[:EVENT_TEXT])
        while True:
            with trio.move_on_after(1.0) as idle:
                event = await events.receive()
            if idle.cancelled_caught:
                if job.done.is_set():
                    return  # its last event was missed (a slow link): nothing more comes
                continue
            if event.get("job") != job.record.id_hex:
                continue
            if event.get("event") == "job" and job.done.is_set():
                return  # the job's last event: everything it printed came before
            if event.get("event") == "output":
                where, text = str(event.get("where", "")), str(event.get("text", ""))
                step = EVENT_TEXT - len(where) - 1
                for start in range(0, len(text), step):  # the role heads every piece
                    await send(EventKind.OUTPUT, f"{where}\n{text[start:start + step]}")


def _submission_refused(node: Node, link: PeerLink, message: JobSubmit) -> (
        tuple[ErrorCode, str] | None):
    """Why this node will not be chief of a submitted job, before it touches the disk."""
    if link.handshake is None or link.handshake.mode is not AuthMode.SWARM:
        # A one-time job code admits a worker for the server's one job, nothing more.
        return ErrorCode.REFUSED, "only members of this node's swarm may submit jobs"
    if not node.donating:
        # Being chief runs the job's splitter and merger here: that is computing for
        # someone else, which a node does only while its owner donates.
        return ErrorCode.NOT_DONATING, ("this node's owner has not switched donation on, so "
                                        "it is chief only of its own jobs")
    if message.package.job_id in node.jobs:
        return ErrorCode.BAD_MESSAGE, "job id already in use"
    if message.kind is JobKind.SCRIPT and not plain_name(message.script or ""):
        # A path would let a member run the chief's own files as its job (rule: script).
        return ErrorCode.REFUSED, ("the script must be one plain file name inside the "
                                   "package: no '/', no '..', not absolute (rule: script)")
    return None


def _without_paths(text: str, folder: Path, node: Node) -> str:
    """A refusal for a peer: paths inside the package relative, the node's own hidden."""
    text = text.replace(f"{folder}/", "").replace(str(folder), ".")
    for private in (str(node.jobs_dir.parent), str(Path.home())):
        text = text.replace(private, "<node>")
    return text


async def evict_jobs(node: Node) -> None:
    """Keep ``jobs/`` under its quota: forget the oldest finished jobs."""
    running = {job_id.hex() for job_id, job in node.jobs.items() if not job.done.is_set()}
    removed = await trio.to_thread.run_sync(
        evict_oldest, node.jobs_dir, node.settings.jobs_mb << 20, running)
    for stem in removed:
        try:
            node.jobs.pop(bytes.fromhex(stem), None)
        except ValueError:
            pass


def _member(link: PeerLink) -> bool:
    """The peer proved swarm membership (not just a one-time job code)."""
    return link.handshake is not None and link.handshake.mode is AuthMode.SWARM


async def answer_status(node: Node, link: PeerLink, message: StatusRequest) -> None:
    """Status of one job (or all) for a swarm member; a job-code client learns nothing of
    this node's jobs beyond the one it works on, which it hears of by JobInfo."""
    if not _member(link):
        await link.send(Error(code=ErrorCode.REFUSED, job_id=message.job_id,
                              reason="only members of this node's swarm may ask for status"))
        return
    jobs = [node.jobs[message.job_id]] if message.job_id in node.jobs else (
        [] if message.job_id is not None else list(node.jobs.values()))
    if message.job_id is not None and not jobs:
        await link.send(Error(code=ErrorCode.NOT_FOUND, reason="no such job here",
                              job_id=message.job_id))
    for job in jobs:
        await link.send(status_of(job))


async def serve_chunk(node: Node, link: PeerLink, request: PackageRequest) -> None:
    """A chunk of a package or results, by content hash. A job-code client is served
    only the package of a job that runs here (its own job: the server has one)."""
    member = _member(link)
    for job in node.jobs.values():
        if not member and getattr(job, "package_hash", None) != request.package:
            continue
        chunk = job.chunk(request)
        if chunk is not None:
            await link.send(chunk)
            return
    await link.send(Error(code=ErrorCode.NOT_FOUND, reason="no such package here"))
