"""The worker side of a node: runs other people's fragments, only while donating.

For each job a chief offers (``JobInfo``), the worker fetches the package by content
hash (cached), checks the submitter's signature over it, and starts sandboxed work
children for it. Fragments come in signed by the chief; results go back signed by this
node, so the chief (or anyone later) can tell who computed what. A job whose chief's
link drops while it holds fragments here keeps its work for the chief's return
(:mod:`._handback`).
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from octop2p.engine._limits import Limits
from octop2p.engine._machine import WorkFailure
from octop2p.engine._package import missing_requirements
from octop2p.engine._unpack import plain_name
from octop2p.net._fetch import (
    PACKAGE_DOWNLOAD_BYTES,
    Downloads,
    WorkRefused,
    install_package,
    verify_package,
)
from octop2p.net._guard import BREACH_RULES, BREACHES_FILE, ChiefGuard
from octop2p.net._peer import PeerLink
from octop2p.net._store import evict_oldest
from octop2p.net._workerjob import RunningJob, WorkerJob
from protocol import (
    Cancel,
    Error,
    ErrorCode,
    Fragment,
    JobInfo,
    JobKind,
)

if TYPE_CHECKING:
    from octop2p.engine._children import ForkServer
    from protocol import NodeIdentity

log = logging.getLogger(__name__)

__all__ = ["DonorNode", "RunningJob", "WorkRefused", "WorkerJob", "WorkerService"]


class DonorSettings(Protocol):
    """The settings of a node that the worker service reads (``NodeSettings`` has them)."""

    @property
    def state_dir(self) -> Path | None: ...  # breaches.json lives here (None: kept in memory)
    @property
    def block_after_breaches(self) -> int: ...
    @property
    def block_hours(self) -> int: ...
    @property
    def packages_mb(self) -> int: ...
    @property
    def handover_seconds(self) -> int: ...  # a lost chief's work is kept this long


class DonorNode(Protocol):
    """What the worker service uses of its node: a :class:`~octop2p.net._node.Node`, or
    any stand-in that has these (the donor side can be tested without a whole node)."""

    @property
    def identity(self) -> NodeIdentity: ...  # signs the results
    @property
    def cores(self) -> int: ...  # donated cores: slots, and how many jobs at once
    @property
    def donating(self) -> bool: ...
    @property
    def limits(self) -> Limits: ...  # the owner's caps over every job's own
    @property
    def layers(self) -> frozenset[str]: ...  # sandbox layers the children get
    @property
    def forkserver(self) -> ForkServer: ...
    @property
    def package_cache(self) -> Path: ...  # packages/, by content hash
    @property
    def settings(self) -> DonorSettings: ...

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a node event ("working", "blocked")."""

    def announce_soon(self) -> None:
        """Tell every chief this node's donation state now (a core came free)."""


class WorkerService:
    """All the work this node does for chiefs of its swarm."""

    def __init__(self, node: DonorNode) -> None:
        self.node = node
        self.jobs: dict[bytes, WorkerJob] = {}
        self.downloads = Downloads()
        self.on_chunk = self.downloads.on_chunk
        self.download = self.downloads.download
        self._fetch_locks: dict[bytes, trio.Lock] = {}
        settings = node.settings
        path = settings.state_dir / BREACHES_FILE if settings.state_dir else None
        self.guard = ChiefGuard.load(path, threshold=settings.block_after_breaches,
                                     hours=settings.block_hours)
        self._refusals_logged: set[bytes] = set()  # jobs of blocked chiefs, logged once

    def running(self) -> list[RunningJob]:
        """What runs on this machine now, for the owner to see."""
        return [job.view for job in self.jobs.values()]

    def slots_for(self, job: WorkerJob) -> int:
        return max(1, self.node.cores // max(1, len(self.jobs)))

    async def on_job_info(self, link: PeerLink, info: JobInfo, nursery: trio.Nursery) -> None:
        if not self.node.donating:
            await link.send(Error(code=ErrorCode.NOT_DONATING,
                                  reason="this node's owner has not switched donation on",
                                  job_id=info.job_id))
            return
        held = self.jobs.get(info.job_id)
        if held is not None:
            if held.link is not link and held.link.peer_id == link.peer_id:
                if held.info.package == info.package:
                    await held.take_up(link)  # its chief is back
                else:
                    held.stop()  # not the job it was: a later offer starts it afresh
            return
        blocked = self.guard.blocked(link.peer_id)
        if blocked:
            await self._refuse_blocked(link, info, blocked)
            return
        if len(self.jobs) >= max(1, self.node.cores):
            # Every job holds at least one child: no more jobs than donated cores. REFUSED
            # makes the chief offer it again on a later heartbeat.
            await link.send(Error(code=ErrorCode.REFUSED, job_id=info.job_id,
                                  reason=f"this node already works on {len(self.jobs)} "
                                  "jobs, one per core it donates"))
            return
        missing = missing_requirements(tuple(info.options.get("requires") or ()))
        if missing:
            await link.send(Error(code=ErrorCode.REFUSED, job_id=info.job_id,
                                  reason=f"this node lacks modules the job requires: "
                                  f"{', '.join(missing)}"))
            return
        job = WorkerJob(self, link, info)
        self.jobs[info.job_id] = job
        log.info("working on job %s (%s) for chief %s", info.name, info.job_id.hex(), link.short)
        self.node.emit("working", job=info.job_id.hex(), name=info.name, chief=link.peer_id,
                       running=True)
        nursery.start_soon(self._run_job, job)

    async def _refuse_blocked(self, link: PeerLink, info: JobInfo, reason: str) -> None:
        if info.job_id not in self._refusals_logged:
            if len(self._refusals_logged) > 4096:
                self._refusals_logged.clear()  # a bound; at worst a line is logged twice
            self._refusals_logged.add(info.job_id)
            log.warning("refusing job %s (%s) of chief %s: %s", info.name, info.job_id.hex(),
                        link.short, reason)
        await link.send(Error(code=ErrorCode.REFUSED, reason=reason, job_id=info.job_id))

    async def check_breach(self, job: WorkerJob, failure: WorkFailure) -> None:
        """A failure of ``job`` here: a sandbox breach counts against its chief, and a
        chief that reaches the threshold is blocked (its jobs here stop, it is told why)."""
        chief = job.link.peer_id
        if failure.rule not in BREACH_RULES or self.guard.blocked(chief):
            return  # a blocked chief's jobs here are being stopped already
        log.warning("job %s of chief %s broke a sandbox rule here (%s): %s", job.info.name,
                    job.link.short, failure.rule, failure.message[:300])
        if not self.guard.breach(chief, job.info.job_id.hex(), job.info.name,
                                 str(failure.rule), failure.message):
            return
        reason = self.guard.blocked(chief)
        await trio.to_thread.run_sync(self.guard.save)
        if not reason:
            return
        log.warning("blocking chief %s: %s", job.link.short, reason)
        self.node.emit("blocked", chief=chief, reason=reason)
        for other in [j for j in self.jobs.values() if j.link.peer_id == chief]:
            self._refusals_logged.add(other.info.job_id)
            await other._tell(Error(code=ErrorCode.REFUSED, reason=reason,
                                    job_id=other.info.job_id))
            other.stop()

    async def unblock(self, chief: str) -> list[str]:
        """The owner lifts the block of ``chief`` (an id or its prefix)."""
        lifted = self.guard.unblock(chief)
        if lifted:
            await trio.to_thread.run_sync(self.guard.save)
            log.info("unblocked chief %s at the owner's request", ", ".join(lifted))
        return lifted

    async def _run_job(self, job: WorkerJob) -> None:
        try:
            await job.run()
        finally:
            self.jobs.pop(job.info.job_id, None)
            log.info("stopped working on job %s (%s) for chief %s: %d fragments run here",
                     job.info.name, job.info.job_id.hex(), job.link.short, job.view.done)
            self.node.emit("working", job=job.info.job_id.hex(), name=job.info.name,
                           chief=job.link.peer_id, running=False)
            # A core is free: say so now, so that chiefs with queued jobs offer them at
            # once instead of at the next heartbeat.
            self.node.announce_soon()

    async def on_fragment(self, link: PeerLink, fragment: Fragment) -> None:
        envelope = fragment.envelope
        job = self.jobs.get(envelope.job_id)
        if job is None or job.link is not link or not self.node.donating:
            await link.send(Error(code=ErrorCode.NOT_DONATING if not self.node.donating
                                  else ErrorCode.NOT_FOUND, reason="not working on that job",
                                  job_id=envelope.job_id, seq=envelope.seq))
            return
        if envelope.ref != job.info.package:
            await link.send(Error(code=ErrorCode.BAD_MESSAGE, reason="fragment for another package",
                                  job_id=envelope.job_id, seq=envelope.seq))
            return
        problem = job.take(fragment)
        if problem:
            await link.send(Error(code=ErrorCode.BUSY if problem.startswith("more") else
                                  ErrorCode.BAD_MESSAGE, reason=problem,
                                  job_id=envelope.job_id, seq=envelope.seq))

    def on_cancel(self, link: PeerLink, cancel: Cancel) -> None:
        job = self.jobs.get(cancel.job_id)
        if job is not None and job.link.peer_id == link.peer_id:  # a chief back too
            job.stop()

    def stop_all(self) -> None:
        """Donation was switched off: stop every job now."""
        for job in list(self.jobs.values()):
            job.stop()

    def lost(self, link: PeerLink) -> None:
        for job in list(self.jobs.values()):
            if job.link is link:
                job.lost()

    async def fetch_package(self, link: PeerLink, info: JobInfo) -> Path:
        """The job's package, unpacked read-only in the cache; fetched once per hash.

        The submitter's signature is checked every time, cached or not: a chief could
        otherwise name a cached package as another submitter's, or another job's.
        """
        if info.kind == JobKind.SCRIPT and not plain_name(info.script or ""):
            raise WorkRefused(ErrorCode.REFUSED, "a job's script must be one plain file name "
                              "inside its package")
        lock = self._fetch_locks.setdefault(info.package, trio.Lock())
        async with lock:
            cache = self.node.package_cache
            target, tar = cache / info.package.hex(), cache / f"{info.package.hex()}.tar"
            fresh = not (target.is_dir() and tar.is_file())
            if fresh:
                part = cache / f".{info.package.hex()}.{secrets.token_hex(4)}.part"
                await self.download(link, info.package, info.package_size, part,
                                    cap=PACKAGE_DOWNLOAD_BYTES)
                tar = part
            try:
                await trio.to_thread.run_sync(verify_package, tar, info)
                if fresh:
                    await trio.to_thread.run_sync(install_package, part, target)
            finally:
                if fresh:
                    part.unlink(missing_ok=True)
            os.utime(target)  # newest: evicted last
            in_use = {job.info.package.hex() for job in self.jobs.values()} | {target.name}
            await trio.to_thread.run_sync(
                evict_oldest, cache, self.node.settings.packages_mb << 20, in_use)
            return target
