"""One job of one chief on a donor: its slots, its inbox of fragments, and its answers,
each signed by this node and bound to the fragment it answers.

The slots run the same loop as the chief's own (``drive_slot``, ``engine/_slot.py``);
only their sink differs: results go back to the remote chief, several per write. The
service that accepts jobs, fetches their packages and blocks chiefs is
:class:`~octop2p.net._donor.WorkerService`.
"""

from __future__ import annotations

import logging
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
from octop2p.engine._slot import MAX_SLOT_WINDOW, Done, Work, child_spec, drive_slot
from octop2p.net._earlychild import EarlyMaker
from octop2p.net._fetch import WorkRefused
from octop2p.net._handback import Handback
from octop2p.net._peer import LinkClosed, PeerLink
from octop2p.net._peerport import KINDS, NOT_RUN, STILL_RUNNING, decode_parts, encode_parts
from protocol import (
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
    from octop2p.net._donor import WorkerService

# The donor's log, where its owner has always found these lines.
log = logging.getLogger("octop2p.net._donor")

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
                maker = EarlyMaker(self.service.node.forkserver, self._child_spec(job_dir),
                                   self.limits, None)
                try:
                    with collapse_groups():  # a slot's LinkClosed must reach the handlers below
                        async with trio.open_nursery() as nursery:
                            self._nursery = maker.watchers = nursery
                            self._start_slots(nursery, maker)
                finally:
                    await maker.aclose()  # its early children that no slot took
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

    def _start_slots(self, nursery: trio.Nursery, maker: EarlyMaker) -> None:
        """The job's slots, each with a child started now, before the first fragment
        arrives (`EarlyMaker`)."""
        slots = self.service.slots_for(self)
        maker.start_early(nursery, slots)
        sink = _ChiefSink(self)
        for _ in range(slots):
            nursery.start_soon(partial(drive_slot, maker, self.inbox, sink,
                                       partitions=self.partitions))

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
        seconds = self.service.node.settings.handover_seconds
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

    def wants(self, work: Work) -> bool:
        """The chief does not say when a fragment sent here is settled: it runs (a
        result the chief no longer needs is dropped there)."""
        return True
