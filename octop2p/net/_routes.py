"""How a node answers its peers: every message type, routed to the method that handles
it by one table (``_ROUTES``). A type not in the table is ignored."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

from octop2p.net._guard import note_refusal
from octop2p.net._hosted import NetworkJob
from octop2p.net._peer import PeerLink
from octop2p.net._submitter import RemoteJob, accept_submission, answer_status, serve_chunk
from protocol import (
    Cancel,
    Error,
    ErrorCode,
    Fragment,
    Heartbeat,
    Hello,
    JobEvent,
    JobInfo,
    JobStatus,
    JobSubmit,
    Message,
    PackageChunk,
    PackageRequest,
    Result,
    StatusRequest,
    WorkRequest,
)

if TYPE_CHECKING:
    import trio

    from octop2p.net._donor import WorkerService
    from octop2p.net._node import Node

log = logging.getLogger("octop2p.net._node")


class MessageRoutes:
    """The message handlers of :class:`~octop2p.net._node.Node` (a mixin)."""

    jobs: dict[bytes, Any]
    worker: WorkerService
    _nursery: trio.Nursery | None

    def _node(self) -> Node:
        return cast("Node", self)

    async def _on_message(self, link: PeerLink, message: Message) -> None:
        """Route one message from a peer by its type (see ``_ROUTES``)."""
        handler = self._ROUTES.get(type(message))
        if handler is not None:
            await handler(self, link, message)

    async def _on_presence(self, link: PeerLink, message: Hello | Heartbeat) -> None:
        for job in list(self.jobs.values()):
            if link.donating:
                await job.offer(link)
            else:
                job.lost(link)  # its owner stopped donating: its leases end now

    async def _on_job_info(self, link: PeerLink, message: JobInfo) -> None:
        assert self._nursery is not None
        await self.worker.on_job_info(link, message, self._nursery)

    async def _on_fragment(self, link: PeerLink, message: Fragment) -> None:
        await self.worker.on_fragment(link, message)

    async def _on_cancel(self, link: PeerLink, message: Cancel) -> None:
        chiefed = self.jobs.get(message.job_id)
        if isinstance(chiefed, NetworkJob) and chiefed.submitter == link.public_key:
            chiefed.cancel()  # only the job's submitter may stop it
        else:
            self.worker.on_cancel(link, message)

    async def _on_submit(self, link: PeerLink, message: JobSubmit) -> None:
        await accept_submission(self._node(), link, message)

    async def _on_status_request(self, link: PeerLink, message: StatusRequest) -> None:
        await answer_status(self._node(), link, message)

    async def _on_job_status(self, link: PeerLink, message: JobStatus) -> None:
        remote = self.jobs.get(message.job_id)
        if isinstance(remote, RemoteJob) and remote.link is link:
            remote.reply(message)

    async def _on_job_event(self, link: PeerLink, message: JobEvent) -> None:
        remote = self.jobs.get(message.job_id)
        if isinstance(remote, RemoteJob) and remote.link is link:
            remote.on_event(message)  # only from the chief the job was submitted to

    async def _on_work(self, link: PeerLink, message: WorkRequest | Result) -> None:
        job_id = message.job_id if isinstance(message, WorkRequest) else message.envelope.job_id
        target = self.jobs.get(job_id) if job_id is not None else None
        if target is not None:
            await target.handle(link, message)
        elif isinstance(message, WorkRequest):
            await link.send(
                Error(code=ErrorCode.NOT_FOUND, reason="no such job here", job_id=job_id)
            )

    async def _on_package_request(self, link: PeerLink, message: PackageRequest) -> None:
        await serve_chunk(self._node(), link, message)

    async def _on_chunk(self, link: PeerLink, message: PackageChunk) -> None:
        self.worker.on_chunk(link, message)

    async def _on_error(self, link: PeerLink, message: Error) -> None:
        log.info("peer %s says: %s (code %s)", link.short, message.reason, message.code)
        remote = self.jobs.get(message.job_id) if message.job_id else None
        if isinstance(remote, RemoteJob) and remote.link is link:
            remote.reply(message)
            return
        working = self.worker.jobs.get(message.job_id) if message.job_id else None
        if working is not None and working.link is link and message.code == ErrorCode.NOT_FOUND:
            working.stop()  # the chief no longer has the job: stop its children now
        if (
            message.job_id is not None
            and message.job_id in self.jobs
            and message.code in (ErrorCode.NOT_DONATING, ErrorCode.REFUSED)
        ):
            self.jobs[message.job_id].lost(link)
            note_refusal(self, self.jobs[message.job_id], link, message.reason)

    #: Every message a peer may send, and the method that handles it. A type not listed
    #: here is ignored.
    _ROUTES: dict[type[Message], Any] = {
        Hello: _on_presence,
        Heartbeat: _on_presence,
        JobInfo: _on_job_info,
        Fragment: _on_fragment,
        Cancel: _on_cancel,
        JobSubmit: _on_submit,
        StatusRequest: _on_status_request,
        JobStatus: _on_job_status,
        JobEvent: _on_job_event,
        WorkRequest: _on_work,
        Result: _on_work,
        PackageRequest: _on_package_request,
        PackageChunk: _on_chunk,
        Error: _on_error,
    }

