"""Submitting a job to another node (``octop2p submit --chief NODE_ID``), and the chief's
side of such a submission.

The submitter signs the package tar (a PACKAGE envelope) and sends it in a
``JobSubmit``; the chief checks it exactly as a local submission and becomes the job's
chief, with the submitter's signature carried to every worker. The submitter follows
the job with ``StatusRequest`` and fetches the results tarball by its content hash.
"""

from __future__ import annotations

import io
import logging
import secrets
import shutil
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from octop2p.engine._package import load_job, with_folder
from octop2p.engine._runner import Progress
from octop2p.errors import JobRefused, NoNodeError, OctoError
from octop2p.net._hosted import JobRecord, NetworkJob, pack_package
from octop2p.net._peer import LinkClosed, PeerLink
from protocol import (
    AuthMode,
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
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
    from octop2p.net._node import Node

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
_FINISHED = (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


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
        results=digest if record.results is not None else None,
        results_size=len(record.results) if record.results is not None else None,
        message=(record.error or "")[:4096],
    )


class RemoteJob:
    """A job this node submitted to another chief, as the node API shows it."""

    def __init__(self, node: Node, link: PeerLink, job_id: bytes, name: str) -> None:
        self.node = node
        self.link = link
        self.job_id = job_id
        self.record = JobRecord(job_id, name, state=JobState.QUEUED)
        self.record.progress = Progress(phase="remote")
        self.done = trio.Event()
        self.results_hash: bytes | None = None
        self._replies: trio.MemorySendChannel[Message]
        self._replies, self._inbox = trio.open_memory_channel[Message](16)

    def reply(self, message: Message) -> None:
        try:
            self._replies.send_nowait(message)
        except trio.WouldBlock:
            pass

    async def follow(self) -> None:
        """Poll the chief until the job ends, then fetch its results."""
        record = self.record
        try:
            while True:
                message = await self._next()
                if isinstance(message, Error):
                    record.state, record.error = JobState.FAILED, message.reason
                    break
                if isinstance(message, JobStatus):
                    record.state = message.state
                    assert record.progress is not None
                    record.progress.done = message.fragments_done
                    record.progress.total = message.fragments_total
                    self.node.emit("progress", job=record.id_hex, phase="remote",
                                   done=message.fragments_done, total=message.fragments_total,
                                   workers={})
                    if message.state in _FINISHED:
                        record.error = message.message
                        if message.state is JobState.DONE and message.results is not None:
                            record.results = await self.node.worker.download(
                                self.link, message.results, message.results_size or 0)
                        break
                await trio.sleep(POLL_SECONDS)
                await self.link.send(StatusRequest(job_id=self.job_id))
        except (LinkClosed, OctoError, Exception) as exc:  # noqa: BLE001 - reported to the user
            record.state = JobState.FAILED
            record.error = record.error or f"lost the chief {self.link.short}: {exc}"
        finally:
            record.finished = time.time()
            self.done.set()
            self.node.emit("job", job=record.id_hex, state=record.state.value, name=record.name,
                           error=record.error)

    async def _next(self) -> Message:
        with trio.fail_after(60):
            return await self._inbox.receive()

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
    links = [link for link in node.links() if link.peer_id.startswith(chief.upper())]
    if len(links) != 1:
        raise NoNodeError(f"no linked peer with id {chief!r} (see `octop2p peers`)")
    link = links[0]
    spec = with_folder(load_job(path, node.limits))
    tar = pack_package(spec)
    job_id = secrets.token_bytes(16)
    envelope = Envelope.sign(node.identity, EnvelopeKind.PACKAGE, job_id, 0, tar)
    job = RemoteJob(node, link, job_id, spec.options.name)
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
    if link.handshake is None or link.handshake.mode is not AuthMode.SWARM:
        # A one-time job code admits a worker for the server's one job, nothing more.
        await link.send(Error(code=ErrorCode.REFUSED, job_id=envelope.job_id,
                              reason="only members of this node's swarm may submit jobs"))
        return
    if not node.donating:
        # Being chief runs the job's splitter and merger here: that is computing for
        # someone else, which a node does only while its owner donates.
        await link.send(Error(code=ErrorCode.NOT_DONATING, job_id=envelope.job_id,
                              reason="this node's owner has not switched donation on, so it "
                              "is chief only of its own jobs"))
        return
    if envelope.job_id in node.jobs:
        await link.send(Error(code=ErrorCode.BAD_MESSAGE, reason="job id already in use",
                              job_id=envelope.job_id))
        return
    folder = node.jobs_dir / envelope.job_id.hex() / "submitted"
    try:
        folder.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(envelope.payload), mode="r:") as archive:
            archive.extractall(folder, filter="data")
        target = folder / message.script if message.kind is JobKind.SCRIPT and message.script \
            else folder
        spec = load_job(target, node.limits)
    except (JobRefused, OSError, tarfile.TarError, ValueError) as exc:
        shutil.rmtree(folder.parent, ignore_errors=True)
        await link.send(Error(code=ErrorCode.REFUSED, reason=str(exc)[:4096],
                              job_id=envelope.job_id))
        return
    job = NetworkJob(node, spec, job_id=envelope.job_id, package_envelope=envelope,
                     tar=envelope.payload)
    node.jobs[job.job_id] = job
    log.info("chief of job %s (%s) submitted by %s", spec.options.name, job.record.id_hex,
             link.short)
    node.spawn(job.run, node.jobs_dir / job.record.id_hex)
    await link.send(status_of(job))


async def answer_status(node: Node, link: PeerLink, message: StatusRequest) -> None:
    jobs = [node.jobs[message.job_id]] if message.job_id in node.jobs else (
        [] if message.job_id is not None else list(node.jobs.values()))
    if message.job_id is not None and not jobs:
        await link.send(Error(code=ErrorCode.NOT_FOUND, reason="no such job here",
                              job_id=message.job_id))
    for job in jobs:
        await link.send(status_of(job))
