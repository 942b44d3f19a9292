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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from octop2p.engine._groups import collapse_groups
from octop2p.engine._limits import JobOptions, Limits
from octop2p.engine._machine import WorkFailure
from octop2p.engine._package import missing_requirements
from octop2p.engine._slot import MAX_SLOT_WINDOW, ChildMaker, Done, Work, child_spec, drive_slot
from octop2p.engine._unpack import plain_name
from octop2p.net._fetch import (
    PACKAGE_DOWNLOAD_BYTES,
    Downloads,
    WorkRefused,
    install_package,
    verify_package,
)
from octop2p.net._guard import BREACH_RULES, BREACHES_FILE, ChiefGuard
from octop2p.net._handback import HANDOVER_SECONDS, Handback
from octop2p.net._peer import LinkClosed, PeerLink
from octop2p.net._peerport import KINDS, NOT_RUN, STILL_RUNNING, decode_parts, encode_parts
from octop2p.net._store import evict_oldest
from protocol import (
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    Failure,
    Fragment,
    JobInfo,
    JobKind,
    Message,
    Result,
    WorkRequest,
)

if TYPE_CHECKING:
    from octop2p.net._node import Node

log = logging.getLogger(__name__)

#: Results wait at most this long for the next one, to go back in one write.
RESULT_FLUSH_SECONDS = 0.005


@dataclass
class RunningJob:
    """What the owner sees of a job running on their machine ("what runs here now")."""

    job_id: str
    name: str
    chief: str
    started: float = field(default_factory=time.time)
    in_progress: set[int] = field(default_factory=set)
    done: int = 0


class WorkerJob:
    """This node's work on one job of one chief: slots driven as on the chief itself."""

    def __init__(self, service: WorkerService, link: PeerLink, info: JobInfo) -> None:
        self.service = service
        self.link = link
        self.info = info
        self.view = RunningJob(info.job_id.hex(), info.name, link.peer_id)
        self.scope = trio.CancelScope()
        # Room for every slot's whole window: a chief that keeps to our credits never
        # finds the inbox full.
        send, receive = trio.open_memory_channel[Work](
            MAX_SLOT_WINDOW * max(1, service.node.cores))
        self.inbox_send, self.inbox = send, receive
        # (kind, seq) -> [digest of the fragment it answers, copies queued here]: a map and
        # a reduce task share sequence numbers, and the chief may send one fragment again.
        self._refs: dict[tuple[str, int], list[Any]] = {}
        options = JobOptions.from_dict(dict(info.options), default_name=info.name)
        limits, _ = options.limits.capped(service.node.limits)
        self.limits: Limits = limits
        self.partitions = int(info.options.get("partitions") or 1)
        self.handback = Handback(service.node.cores)
        self._nursery: trio.Nursery | None = None
        self._back = trio.Event()  # set when the chief takes the job up again

    async def run(self) -> None:
        with self.scope:
            try:
                job_dir = await self.service.fetch_package(self.link, self.info)
                with collapse_groups():  # a slot's LinkClosed must reach the handlers below
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        maker = ChildMaker(self.service.node.forkserver,
                                           self._child_spec(job_dir), self.limits, nursery)
                        sink = _ChiefSink(self)
                        for _ in range(self.service.slots_for(self)):
                            nursery.start_soon(partial(drive_slot, maker, self.inbox, sink,
                                                       partitions=self.partitions))
            except WorkRefused as exc:
                log.warning("not working on job %s of %s: %s", self.info.name, self.link.short, exc)
                await self._tell(Error(code=exc.code, reason=str(exc), job_id=self.info.job_id))
            except LinkClosed:
                pass
            except Exception as exc:  # noqa: BLE001 - a bug here fails this job, not the node
                log.exception("job %s of %s failed inside octop2p", self.info.name,
                              self.link.short)
                # REFUSED: the chief ends our leases and hands the fragments on.
                await self._tell(Error(code=ErrorCode.REFUSED, job_id=self.info.job_id,
                                       reason=f"the worker failed: {exc!r}"[:4096]))

    async def _tell(self, message: Error) -> None:
        try:
            await self.link.send(message)
        except LinkClosed:
            pass

    def stop(self) -> None:
        self.scope.cancel()

    def lost(self) -> None:
        """The chief's link dropped: keep the work it gave this node for its return, or
        stop when there is none."""
        if self._nursery is None or not (self._refs or self.handback.has_work()):
            self.stop()
            return
        self.handback.away = True
        self.handback.forget(time.monotonic())
        seconds = getattr(self.service.node.settings, "handover_seconds", HANDOVER_SECONDS)
        log.info("lost chief %s of job %s: its %d fragments here run on, and their results "
                 "are kept %d s for its return", self.link.short, self.info.name,
                 len(self._refs), seconds)
        self._nursery.start_soon(self._wait_for_chief, seconds)

    async def _wait_for_chief(self, seconds: float) -> None:
        back = self._back
        with trio.move_on_after(seconds):
            await back.wait()
            return
        log.warning("chief %s of job %s did not come back within %d s "
                    "(handover_seconds): dropping %d results and %d running fragments",
                    self.link.short, self.info.name, seconds, self.handback.held,
                    len(self._refs))
        self.stop()

    async def take_up(self, link: PeerLink) -> None:
        """The chief offers this job again on a new link: hand in what was kept for it,
        then ask for work as before (docs/jobs.md, "When the chief restarts")."""
        self.link, self.handback.away = link, False
        self._back.set()
        self._back = trio.Event()
        running = [Result(envelope=self._envelope(seq, b"", ref), failure=Failure(
            message="still running from before the chief restarted", rule=STILL_RUNNING))
            for (_, seq), (ref, _) in sorted(self._refs.items())]
        messages = self.handback.hand_in()
        log.info("chief %s is back: handing in %d results of job %s, and %d fragments "
                 "still running (%d results were not kept: over the bounds)", link.short,
                 len(messages), self.info.name, len(running), self.handback.dropped)
        self.handback.dropped = 0
        messages += running
        if self.handback.owed:
            messages.append(WorkRequest(credits=min(self.handback.owed, 65536),
                                        job_id=self.info.job_id))
        try:
            await link.send_many(messages)
        except LinkClosed:
            pass  # gone again: `lost` comes next

    async def send(self, messages: Sequence[Message]) -> bool:
        """To the chief, unless it is away (False: then they are dropped, and it runs
        those fragments again)."""
        if self.handback.away:
            return False
        try:
            await self.link.send_many(messages)
        except LinkClosed:
            return False
        return True

    async def send_results(self, results: list[Result]) -> None:
        """Results to the chief; while it is away they are kept for its return."""
        if await self.send(results):
            self.handback.sent(results, time.monotonic())
        else:
            self.handback.hold(results)

    def take(self, fragment: Fragment) -> str:
        """Queue a fragment from the chief; returns why not ("" when queued)."""
        envelope = fragment.envelope
        kind = KINDS.get(fragment.task)
        if kind is None:
            return "unknown task"
        payload: Any = envelope.payload
        if kind == "reduce":
            try:
                payload = decode_parts(payload)
            except ValueError as exc:
                return f"a malformed reduce task: {exc}"
        try:
            self.inbox_send.send_nowait(Work(kind, envelope.seq, payload))
        except trio.WouldBlock:
            return "more fragments than credits"
        self.handback.received += 1
        ref = self._refs.setdefault((kind, envelope.seq), [envelope.digest, 0])
        ref[0] = envelope.digest
        ref[1] += 1
        self.view.in_progress.add(envelope.seq)
        return ""

    def _child_spec(self, job_dir: Path) -> dict[str, Any]:
        return child_spec(
            "work", kind="package" if self.info.kind == JobKind.PACKAGE else "script",
            job_dir=job_dir, script=self.info.script, results_dir=None, limits=self.limits,
            options={"partitions": self.partitions,
                     "map_batch": self.info.options.get("map_batch")},
            layers=self.service.node.layers)

    def signed(self, kind: str, seq: int, data: bytes, out: str = "",
               failure: Failure | None = None) -> Result:
        """A Result for ``seq``, signed by this node and bound to the chief's fragment."""
        self.view.in_progress.discard(seq)
        ref = self._refs[(kind, seq)]
        ref[1] -= 1
        if ref[1] <= 0:
            del self._refs[(kind, seq)]
        return Result(envelope=self._envelope(seq, data, ref[0]), out=out[:200_000],
                      failure=failure)

    def _envelope(self, seq: int, data: bytes, ref: bytes) -> Envelope:
        return Envelope.sign(self.service.node.identity, EnvelopeKind.RESULT,
                             self.info.job_id, seq, data, ref=ref)


class _ChiefSink:
    """A donor's slots answer their remote chief: signed results, several per write."""

    flush_seconds = RESULT_FLUSH_SECONDS

    def __init__(self, job: WorkerJob) -> None:
        self.job = job

    async def results(self, done: list[Done]) -> None:
        job = self.job
        job.view.done += len(done)
        await job.send_results([
            job.signed(d.kind, d.seq, encode_parts(d.payload) if isinstance(d.payload, list)
                       else d.payload, d.out) for d in done])

    async def failed(self, work: Work, failure: WorkFailure) -> None:
        # The chief retries a failure without a traceback (a crash) and takes one with a
        # traceback as the job's own error: keep the two apart on the wire.
        traceback = failure.traceback or (failure.message if failure.deterministic else "")
        if not failure.deterministic:
            traceback = ""
        await self.job.send([self.job.signed(work.kind, work.seq, b"", failure=Failure(
            message=failure.message[:4000],
            rule=failure.rule[:64] if failure.rule else None,
            traceback=traceback[:65000],
            file=failure.file[:1000] if failure.file else None,
            line=failure.line,
        ))])
        await self.job.service.check_breach(self.job, failure)

    async def gave_back(self, works: list[Work]) -> None:
        """Fragments of a lost batch that never ran: the chief hands them out again."""
        if works:
            await self.job.send([self.job.signed(w.kind, w.seq, b"", failure=Failure(
                message="not run: the child was lost", rule=NOT_RUN)) for w in works])

    async def credits(self, n: int) -> None:
        self.job.handback.granted += n
        await self.job.send([WorkRequest(credits=n, job_id=self.job.info.job_id)])

    def printed(self, where: str, text: str) -> None:
        """What job code prints as it loads stays on this machine."""



class WorkerService:
    """All the work this node does for chiefs of its swarm."""

    def __init__(self, node: Node) -> None:
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
