"""A job this node is chief of: the runner, with the node's own slots and linked donors.

The :class:`~octop2p.engine._runner.JobRunner` runs it exactly as ``octop2p run`` does.
This module adds what travels: the job's package (sent once per donor, by content hash,
in chunks), the donors as :class:`~octop2p.net._peerport.PeerPort` workers, progress
events, and the job's record and folder in the store.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import trio

from octop2p.engine._groups import collapse_groups
from octop2p.engine._journal import Journal
from octop2p.engine._local import LocalPort
from octop2p.engine._machine import Trust
from octop2p.engine._manifest import Provenance
from octop2p.engine._package import JobSpec, pack_package
from octop2p.engine._results import pack
from octop2p.engine._resume import JobJournal
from octop2p.engine._runner import JobRunner, Progress
from octop2p.errors import JobFailed, OctoError
from octop2p.net._jobstore import ArchivedJob, JobRecord, JobStore
from octop2p.net._peer import LinkClosed, PeerLink
from octop2p.net._peerport import MAX_CLAIMED_CORES, PeerPort
from octop2p.net._store import StoreError, remove_tree
from protocol import (
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    JobInfo,
    JobKind,
    JobState,
    Message,
    PackageChunk,
    PackageRequest,
    Result,
    WorkRequest,
    content_hash,
)

if TYPE_CHECKING:
    from octop2p.engine._children import ForkServer
    from octop2p.net._reputation import Reputation
    from protocol import NodeId, NodeIdentity

log = logging.getLogger(__name__)

# The store's names, where the rest of the node has always found them.
__all__ = ["ArchivedJob", "JobRecord", "JobStore", "NetworkJob", "pack_package"]

JOURNAL_SECONDS = 1.0
#: Progress events are for eyes (progress bars, the GUI): one per result would cost the
#: chief more than the results themselves, so they go out at most this often.
PROGRESS_EVENT_SECONDS = 0.1
#: Reduce tasks a chief picks for a script at most, however many cores are linked.
MAX_PARTITIONS = 128


class ChiefNode(Protocol):
    """What a job this node is chief of uses of its node (a
    :class:`~octop2p.net._node.Node`)."""

    @property
    def id(self) -> NodeId: ...
    @property
    def identity(self) -> NodeIdentity: ...  # signs the package and the manifest
    @property
    def forkserver(self) -> ForkServer: ...
    @property
    def layers(self) -> frozenset[str]: ...
    @property
    def reputation(self) -> Reputation: ...  # what the node learnt of its workers
    @property
    def settings(self) -> Any: ...  # ``NodeSettings``: ``journal`` (on unless False)

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a node event ("job", "progress", "output", "worker", ...)."""

    def links(self) -> list[PeerLink]:
        """Every open link (each may be offered the job)."""

    def local_slots(self) -> int:
        """The node's own slots for its jobs (0 when it neither donates nor runs its
        owner's job locally)."""

    def save_reputation(self) -> None:
        """Write the reputation file soon."""


class NetworkJob:
    """One job this node is chief of, run by the runner for local slots and donors."""

    def __init__(
        self,
        node: ChiefNode,
        spec: JobSpec,
        *,
        job_id: bytes | None = None,
        package_envelope: Envelope | None = None,
        tar: bytes | None = None,
    ) -> None:
        self.node = node
        self.spec = spec
        self.job_id = job_id or secrets.token_bytes(16)
        # A submitted job keeps the submitter's exact bytes: their signature covers them.
        self.tar = tar if tar is not None else pack_package(spec)
        envelope = package_envelope
        self.worker_tar = self.tar
        if spec.kind == "script":
            # Donors get the script alone: its `source` runs here, on the chief, and a
            # folder of data would only be re-read by every donor's import. This node
            # signs that package, since it made it.
            self.worker_tar = pack_package(dataclasses.replace(spec, files=(str(spec.script),)))
            envelope = None
        self.package_hash = content_hash(self.worker_tar)
        self.package_envelope = envelope or Envelope.sign(
            node.identity, EnvelopeKind.PACKAGE, self.job_id, 0, self.worker_tar
        )
        # Who submitted the job (whose Cancel counts): the submitter's key, else ours.
        self.submitter = (package_envelope or self.package_envelope).author
        self.record = JobRecord(self.job_id, spec.options.name)
        self.runner: JobRunner | None = None
        self._cancel_requested = False
        self.trust: Trust | None = None
        self._agreed_before: dict[str, int] = {}
        self._ports: dict[str, PeerPort] = {}  # donors working on this job
        self._offered: set[str] = set()  # peers told about this job on their current link
        self._journalled = 0.0
        self._kept = 0  # results the journal kept when the job resumed
        self._progress_sent = 0.0  # when the last progress event went out (monotonic)
        self._progress_phase = ""
        self._progress_due = False  # a newer progress than the last event is waiting
        self.results_hash: bytes | None = None
        self.store: JobStore | None = None
        self._nursery: trio.Nursery | None = None
        self.done = trio.Event()

    # --- running -------------------------------------------------------------------------

    def job_info(self) -> JobInfo:
        return JobInfo(
            job_id=self.job_id,
            name=self.spec.options.name,
            kind=JobKind.PACKAGE if self.spec.kind == "package" else JobKind.SCRIPT,
            script=self.spec.script,
            package=self.package_hash,
            package_size=len(self.worker_tar),
            submitter=self.package_envelope.author,
            package_signature=self.package_envelope.signature,
            options=self._wire_options(),
        )

    def _wire_options(self) -> dict[str, Any]:
        opts = self.spec.options.to_dict()
        if self.runner is not None:
            opts["partitions"] = self.runner.partitions
        return opts

    async def run(self, job_dir: Path) -> None:
        """Run the job to the end; never raises for the job's own failure.

        ``job_dir`` is this job's folder in the store: the package, a journal of its
        state (``job.json``), the results, and the chief's scratch folder while it runs.
        """
        record = self.record
        record.state = JobState.RUNNING
        try:  # a full or read-only disk fails this job alone, before anything runs
            self.store = await JobStore.start(job_dir, self)
        except StoreError as exc:
            record.state, record.error, record.finished = JobState.FAILED, str(exc), time.time()
            log.warning("job %s not started: %s", record.id_hex, exc)
            self.done.set()
            self.node.emit("job", job=record.id_hex, state=record.state.value,
                           name=record.name, error=record.error)
            return
        work_dir = job_dir / "work"
        try:
            journal = await self._open_journal(job_dir)
        except OSError as exc:
            record.state, record.finished = JobState.FAILED, time.time()
            record.error = f"the chief could not open this job's journal: {exc.strerror or exc}"
            await self.store.write_journal(self)
            self.done.set()
            self.node.emit("job", job=record.id_hex, state=record.state.value,
                           name=record.name, error=record.error)
            return
        local = self.node.local_slots()
        options = self.spec.options
        self.trust = self.node.reputation.trust(
            own=str(self.node.id), verify=options.verify,
            spot_share=options.spot_checks / 100, salt=self.job_id)
        self._agreed_before = dict(self.trust.agreed)
        self.runner = runner = JobRunner(
            self.spec, self.node.forkserver, work_dir=work_dir, layers=self.node.layers,
            partitions=self._partitions(local), on_progress=self._on_progress,
            on_output=self._on_output, on_log=self._on_log, trust=self.trust, journal=journal)
        if self._cancel_requested:
            runner.cancel()  # the owner cancelled it while it was being stored
        self.provenance = Provenance(work_dir)
        runner.on_accepted = self.provenance.add
        if local:
            # The node's own cores vote as one node: redundancy asks for distinct machines.
            node_id = str(self.node.id)
            runner.served.append(LocalPort(local, lambda i: node_id))
        self.node.emit("job", job=record.id_hex, state=record.state.value, name=record.name)
        try:
            # The nursery reports a failure as an exception group; the job's own error
            # must come out plain, or it would escape into the node and stop it.
            with collapse_groups():
                await self._serve(runner)
            record.state = JobState.DONE
        except JobFailed as exc:
            record.state = JobState.CANCELLED if exc.rule == "cancelled" else JobState.FAILED
            record.error, record.error_rule, record.traceback = str(exc), exc.rule, exc.traceback
        except OctoError as exc:
            record.state, record.error = JobState.FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug of ours fails this job, not the node
            log.exception("job %s failed inside octop2p", record.id_hex)
            record.state = JobState.FAILED
            record.error = f"octop2p failed while running this job: {exc!r} (see the node's log)"
        finally:
            self._nursery = None
            self._fold_trust()
            news = runner.handover.news()  # the last of it, if the log has not said it
            if news:
                self._on_log(news)
            if journal is not None:
                journal.journal.close()
            if record.state in (JobState.RUNNING, JobState.FINISHING):
                # The node is stopping: the job stays as it is, for the next start to
                # resume (docs/architecture.md, "What a crash keeps").
                await self.store.write_journal(self)
                self.done.set()
            else:
                await self._ended(job_dir)

    def _partitions(self, local: int) -> int:
        """A script's reduce tasks (unless it sets ``partitions``): two per core that can
        work on it as it starts, this node's own slots and its donating peers' cores, as
        `octop2p run` has two per worker. Only its own slots counted before: a chief that
        does not donate ran every job's reduce as two tasks, however many donors it had."""
        donated = sum(max(1, min(link.cores, MAX_CLAIMED_CORES)) for link in self.node.links()
                      if link.donating and not self.node.reputation.quarantined(link.peer_id))
        return min(MAX_PARTITIONS, max(2, 2 * (local + donated)))

    async def _ended(self, job_dir: Path) -> None:
        """The job is over: its scratch folders go, its record is written, its workers
        and the node's listeners are told."""
        record = self.record
        record.finished = time.time()
        for folder in ("work", "submitted", "journal"):
            await remove_tree(job_dir / folder)  # off the event loop: 400,000 files...
        assert self.store is not None
        await self.store.write_journal(self)
        await self._tell_workers_done()
        self.done.set()
        self.node.emit("job", job=record.id_hex, state=record.state.value, name=record.name,
                       error=record.error)

    async def _open_journal(self, job_dir: Path) -> JobJournal | None:
        """The job's journal, with what an earlier run of this node left in it."""
        if not getattr(self.node.settings, "journal", True):
            return None
        journal = Journal(job_dir / "journal")
        recovered = await trio.to_thread.run_sync(journal.open)
        if self.record.resumed is not None:
            self.record.resumed = self._kept = recovered.kept()
            log.info("job %s (%s) resumed: %d results kept from before the restart",
                     self.record.name, self.record.id_hex[:12], self.record.resumed)
        return JobJournal(journal, recovered)

    async def _serve(self, runner: JobRunner) -> None:
        record = self.record
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._progress_events)
            nursery.start_soon(self._offer_all, runner)
            results_dir = await runner.run()
            record.state = JobState.FINISHING
            await self.provenance.seal(results_dir, self.node.identity, job_id=record.id_hex,
                                       name=record.name, package=self.package_hash)
            record.results = await trio.to_thread.run_sync(pack, results_dir)
            self.results_hash = content_hash(record.results)
            assert self.store is not None
            await trio.to_thread.run_sync(self.store.save_results, record.results)
            nursery.cancel_scope.cancel()

    async def _offer_all(self, runner: JobRunner) -> None:
        """Offer the job to every linked donor; a resumed job once its first phase has
        begun, so that what donors hand in finds the fragments it answers."""
        while self.record.resumed is not None and runner.machine.phase is None:
            await runner.changed.wait()
        for link in self.node.links():
            await self.offer(link)

    def cancel(self) -> None:
        """Stop the job at the submitter's request, even before its runner exists."""
        self._cancel_requested = True
        if self.runner is not None:
            self.runner.cancel()

    async def _tell_workers_done(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            # Every link, not just the donors that asked for work: one told the job
            # but not yet asking would keep its children for good. A Cancel for a job a
            # peer does not run is ignored there.
            for link in self.node.links():
                try:
                    await link.send(Cancel(job_id=self.job_id, reason=self.record.state.value))
                except LinkClosed:
                    pass

    def _on_log(self, line: str) -> None:
        log.info("job %s (%s): %s", self.record.name, self.record.id_hex[:12], line)

    def _on_progress(self, progress: Progress) -> None:
        self.record.progress = progress
        if self.record.resumed is not None and self.runner is not None:
            # Kept too: results that donors handed in, computed before the restart.
            self.record.resumed = self._kept + self.runner.handover.merged
        now = time.monotonic()
        if (now - self._journalled > JOURNAL_SECONDS and self.store is not None
                and self._nursery is not None):
            self._journalled = now
            self.store.journal_soon(self, self._nursery)  # fsync: never on the event loop
        if (
            progress.phase == self._progress_phase
            and progress.done != progress.total
            and now - self._progress_sent < PROGRESS_EVENT_SECONDS
        ):
            self._progress_due = True  # `_progress_events` sends it shortly
            return
        self._emit_progress(progress)

    def _emit_progress(self, progress: Progress) -> None:
        self._progress_sent, self._progress_phase = time.monotonic(), progress.phase
        self._progress_due = False
        self.node.emit(
            "progress",
            job=self.record.id_hex,
            phase=progress.phase,
            done=progress.done,
            total=progress.total,
            workers=dict(progress.workers),
            waiting=progress.waiting,
        )

    async def _progress_events(self) -> None:
        """Send the latest progress that `_on_progress` held back, so none goes stale;
        report nodes caught returning wrong results."""
        while True:
            await trio.sleep(PROGRESS_EVENT_SECONDS)
            if self._progress_due and self.record.progress is not None:
                self._emit_progress(self.record.progress)
            if self.trust is not None and self.trust.caught:
                self._fold_trust()

    def _fold_trust(self) -> None:
        """What this job learnt of its workers goes into the node's reputation."""
        if self.trust is None or (self.trust.agreed == self._agreed_before
                                  and not self.trust.caught):
            return  # nothing learnt: no write
        for node, why in self.node.reputation.absorb(self.trust, self._agreed_before):
            log.warning("job %s: node %s %s; it is quarantined (`octop2p peers --forgive "
                        "%s` lifts it)", self.record.name, node, why, node)
            self.node.emit("quarantined", id=node, reason=why, job=self.record.id_hex)
        self._agreed_before = dict(self.trust.agreed)
        self.node.save_reputation()

    def _on_output(self, where: str, text: str) -> None:
        if where == "final":  # what `final` prints is the job's output (as in `run`)
            if sum(map(len, self.record.output)) < 1 << 20:
                self.record.output.append(text)
        self.node.emit("output", job=self.record.id_hex, where=where, text=text)

    # --- remote workers ------------------------------------------------------------------

    async def offer(self, link: PeerLink) -> None:
        """Tell a donating peer about this job, so it can fetch the package and ask for work."""
        if not link.donating or self.record.state not in (JobState.QUEUED, JobState.RUNNING):
            return
        if self.runner is None or link.peer_id in self._offered or (
                self.record.resumed is not None and self.runner.machine.phase is None):
            return  # too early to take work requests; `run` offers to every link
        if self.node.reputation.quarantined(link.peer_id):
            return  # caught returning wrong results: it gets no work from us
        self._offered.add(link.peer_id)
        try:
            await link.send(self.job_info())
        except LinkClosed:
            pass

    def lost(self, link: PeerLink) -> None:
        """A worker's link closed (or it stopped donating): its leases end now."""
        worker = link.peer_id
        self._offered.discard(worker)
        port = self._ports.pop(worker, None)
        if port is not None and port.link is link:
            port.close()
            self.node.emit("worker", job=self.record.id_hex, worker=worker, joined=False)

    async def handle(self, link: PeerLink, message: Message) -> None:
        """A message from a worker about this job."""
        port = self._ports.get(link.peer_id)
        if isinstance(message, Result):
            if port is None or port.link is not link:
                # A donor back after this chief restarted hands in results before it
                # asks for work (docs/jobs.md, "When the chief restarts").
                port = self._port(link) if link.peer_id in self._offered else None
            if port is not None:
                port.on_result(message)
        elif isinstance(message, WorkRequest):
            port = self._port(link)
            if port is None:
                await link.send(Error(code=ErrorCode.NOT_FOUND, reason="no such running job",
                                      job_id=self.job_id))
                return
            port.credit(message.credits)

    def _port(self, link: PeerLink) -> PeerPort | None:
        """The donor's port for this job on ``link``, made when it first speaks; None
        when the job takes no workers."""
        runner = self.runner
        if runner is None or self._nursery is None or self.record.state is not JobState.RUNNING:
            return None
        port = self._ports.get(link.peer_id)
        if port is None or port.link is not link:
            if port is not None:
                port.close()
            port = PeerPort(runner, link, self.node.identity, self.job_id, self.package_hash)
            self._ports[link.peer_id] = port
            self._nursery.start_soon(port.serve)
            self.node.emit("worker", job=self.record.id_hex, worker=link.peer_id, joined=True)
        return port

    # --- package and results download ----------------------------------------------------

    def chunk(self, request: PackageRequest) -> PackageChunk | None:
        """A chunk of this job's package or results, if ``request`` names one of them."""
        for blob, digest in (
            (self.worker_tar, self.package_hash),
            (self.record.results, self.results_hash),
        ):
            if blob is not None and digest == request.package:
                data = blob[request.offset : request.offset + request.length]
                return PackageChunk(
                    package=request.package, offset=request.offset, total=len(blob), data=data
                )
        return None
