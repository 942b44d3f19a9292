"""The runner: the one trio object that runs a job, whoever its workers are.

It owns the :class:`~octop2p.engine._machine.JobMachine` and is the only thing that
feeds it: worker ports (the node's own sandboxed slots, linked donors) report results,
failures and credits here, and the runner hands out what the machine assigns. It also
drives the job's chief-side children: the splitter (or a script's source), the merger
and ``finalize``, or a MapReduce job's ``final``. Job code never runs in this process.

``octop2p run``, ``submit`` (a temporary node), a node's daemon, the app and
``octop2p server`` all run jobs through this one class.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import trio

from octop2p.engine._children import ChildDied, ChildProtocolError, ChildReported, ForkServer
from octop2p.engine._groups import collapse_groups
from octop2p.engine._handover import HandedIn, HandoverDesk
from octop2p.engine._journal import Logged, Recovered, restore
from octop2p.engine._limits import Limits
from octop2p.engine._machine import JobMachine, Trust, WorkFailure
from octop2p.engine._package import JobSpec
from octop2p.engine._progress import Changed, OutputSink, Progress
from octop2p.engine._reorder import CausalBuffer
from octop2p.engine._results import check_output_quota
from octop2p.engine._resume import JobJournal
from octop2p.engine._scheduler import Verdict
from octop2p.engine._scriptflow import run_script
from octop2p.engine._slot import (
    MAX_BATCH,
    ChildMaker,
    Done,
    Pacer,
    SpawnFailed,
    Work,
    breach_of,
    child_spec,
    failure_from,
)
from octop2p.engine._watchers import watch_child
from octop2p.errors import JobFailed

log = logging.getLogger(__name__)

#: How often leases are checked; fragments worth a call to the splitter (a round trip)
#: while workers hold as many (fewer can wait for more).
TICK_SECONDS, SPLIT_AT_LEAST = 1.0, MAX_BATCH // 2


class WorkerPort(Protocol):
    """Workers of one kind: they join the runner, and take what it delivers."""

    def deliver(self, worker: str, works: list[Work]) -> None:
        """Hand ``works`` to ``worker`` now, without blocking (within its credits)."""


class ServedPort(WorkerPort, Protocol):
    """A port whose workers live as long as the job (the node's own slots)."""

    async def serve(self, runner: JobRunner, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Join the runner's workers and serve them until cancelled."""


class JobRunner:
    """Runs one job to its results folder (see the module docstring)."""

    def __init__(
        self,
        spec: JobSpec,
        forkserver: ForkServer,
        *,
        work_dir: Path,
        layers: frozenset[str],
        partitions: int | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_output: OutputSink | None = None,
        on_log: Callable[[str], None] | None = None,
        trust: Trust | None = None,
        journal: JobJournal | None = None,
    ) -> None:
        self.spec = spec
        self.limits: Limits = spec.options.limits
        self.fs = forkserver
        self.work_dir = work_dir
        self.results_dir = work_dir / "results"
        self.layers = layers
        #: The job's journal (a node's jobs; None in `octop2p run`) and what an earlier
        #: run of the chief left in it (docs/architecture.md, "What a crash keeps").
        self.journal = journal
        self.recovered = journal.recovered if journal is not None else Recovered()
        self.partitions = (self.recovered.meta.get("partitions")
                           or spec.options.partitions or partitions or 2)
        self.machine = JobMachine(self.limits, redundancy=spec.options.redundancy, trust=trust,
                                  backup_tasks=spec.options.backup_tasks)
        self.on_progress = on_progress or (lambda p: None)
        self.on_output = on_output or (lambda where, text: None)
        self.on_log = on_log or (lambda line: log.info("job %s: %s", spec.options.name, line))
        #: Called for every accepted result: (kind, seq, content digest, agreeing voters).
        self.on_accepted: Callable[[str, int, bytes, list[str]], None] = (
            lambda kind, seq, digest, voters: None)
        self.changed = Changed()
        self._kick = trio.Event()  # set by `_changed`, served by `_dispatcher`
        self._dispatching = False
        self._cancelled = False
        self.progress = Progress(phase="starting")
        self._ports: dict[str, WorkerPort] = {}
        self._failure: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self.watchers: trio.Nursery | None = None  # thread counters, while the job runs
        self._phase_started = time.monotonic()
        self._accept: Callable[[int, Any], None] = lambda seq, data: None
        self._load: Callable[[int], Any] | None = None
        self.worker_dir = spec.root
        self.served: list[ServedPort] = []  # started with the job, stopped when it ends
        self.handover = HandoverDesk()  # results computed for the chief's earlier run

    @property
    def accepted(self) -> int:
        """Fragments and tasks accepted, every phase."""
        return self.machine.accepted

    # --- what ports call -----------------------------------------------------------------

    def join(self, worker: str, voter: str, cap: int, port: WorkerPort) -> None:
        """A worker (a local slot, a linked donor) is ready for this job."""
        self._ports[worker] = port
        self.machine.join(worker, voter, cap)
        self._changed()

    def leave(self, worker: str) -> None:
        """A worker is gone (its link closed, its slot ended)."""
        if self._ports.pop(worker, None) is not None:
            self.machine.leave(worker)
            self._changed()

    def credit(self, worker: str, n: int) -> None:
        self.machine.credit(worker, n)
        self._changed()

    def results(self, worker: str, done: list[Done]) -> None:
        """Answers from ``worker``; those the machine accepts are merged."""
        now = time.monotonic()
        accepted = False
        try:
            for d in done:
                if self.machine.result(worker, d.kind, d.seq, d.payload, now) is Verdict.ACCEPT:
                    self._merge(d.kind, d.seq, d.payload)
                    accepted = True
                if d.out:
                    self._emit_out(f"{d.kind} {d.seq}", d.out)
        except JobFailed as exc:
            self.fail(exc)
        if accepted and self.machine.phase is not None and self.machine.phase.kind != "process":
            self.progress.done = self.machine.table.done  # (workers: as `_report` says)
        self._changed()

    def _merge(self, kind: str, seq: int, payload: Any) -> None:
        """The machine accepted ``payload`` for ``seq``: journal it and merge it."""
        digest, voters = self.machine.last_accepted
        if self.journal is not None:
            self.journal.accepted(kind, seq, payload, digest, voters)
        self._accept(seq, payload)
        self.on_accepted(kind, seq, digest, voters)

    def handed_in(self, item: HandedIn) -> None:  # from before the chief restarted
        self._adopt(lambda now: self.handover.offer(self.machine, item, now, self._load))

    def _adopt(self, offer: Callable[[float], list[HandedIn]]) -> None:
        try:
            for item in offer(time.monotonic()):
                self._merge(item.kind, item.seq, item.data)
        except JobFailed as exc:
            self.fail(exc)
        self.progress.workers = self.machine.counts()
        self._changed()

    def failed(self, worker: str, work: Work, failure: WorkFailure) -> None:
        self._emit_out(f"{work.kind} {work.seq}", failure.out)
        try:
            self.machine.failure(worker, work.kind, work.seq, failure, time.monotonic())
        except JobFailed as exc:
            self.fail(exc)
        self._changed()

    def gave_back(self, worker: str, works: list[Work]) -> None:
        for work in works:
            self.machine.giveback(worker, work.kind, work.seq)
        self._changed()

    def _changed(self) -> None:
        """Something moved: hand out what can go, and wake the phase loops, once for all
        that moved since the dispatcher last ran (a burst of results costs one round).
        Before the job runs (no dispatcher yet), at once."""
        if self._dispatching:
            self._kick.set()
        else:
            self._round()

    def _round(self) -> None:
        self._dispatch()
        for line in self.machine.drain_log():
            self.on_log(line)
        self.changed.notify()

    async def _dispatcher(self) -> None:
        self._dispatching = True
        try:
            while True:
                # A round when something moved, or once a fragment out is late enough
                # for a backup task (else up to a tick later).
                now = time.monotonic()  # (the machine's clock, not trio's)
                with trio.move_on_after(self.machine.backup_due(now) - now):
                    await self._kick.wait()
                self._kick = trio.Event()
                self._round()
        finally:
            self._dispatching = False

    def _dispatch(self) -> None:
        phase = self.machine.phase
        if phase is None or self._failure is not None or (
                self._scope is not None and self._scope.cancel_called):
            return  # a job that is ending hands out nothing (its inputs may be closed)
        load = self._load
        for worker, assigned in self.machine.dispatch(time.monotonic()):
            works = [Work(phase.kind, a.seq, load(a.payload) if load else a.payload)
                     for a in assigned]
            self._ports[worker].deliver(worker, works)

    # --- children ------------------------------------------------------------------------

    def maker(self, role: str) -> ChildMaker:
        """Starts this job's children of ``role`` ("split", "work" or "merge")."""
        merge = role == "merge"
        job_dir = self.worker_dir if role == "work" else self.spec.root
        spec = child_spec(
            role, kind=self.spec.kind, job_dir=job_dir,
            script=self.spec.script, results_dir=self.results_dir if merge else None,
            limits=self.limits, layers=self.layers,
            options={"partitions": self.partitions, "map_batch": self.spec.options.map_batch},
        )
        return ChildMaker(self.fs, spec, self.limits, self.watchers)

    async def _spawn(self, role: str, on_printed: Any = None) -> Any:
        """A ready chief-side child; a failure while loading the job fails the job.
        ``on_printed(where, text)`` gets what it printed while loading (default: output)."""
        try:
            child = await self.maker(role).spawn(on_printed or self._emit_out)
        except SpawnFailed as exc:
            raise exc.failure.error(f"the {role} child, while loading the job") from None
        if self.watchers is not None:
            watch_child(self.watchers, self, child, role)
        return child

    async def _call(self, child: Any, request: list[Any], where: str, *,
                    timeout: float) -> list[Any]:
        """One request to a chief-side child, with its reply; any failure fails the job."""
        try:
            with trio.fail_after(timeout):
                await child.send(request)
                while True:
                    reply = await child.receive()
                    if reply[0] == "output":
                        self._emit_out("final", reply[1])
                        continue
                    self._emit_out(where, reply[-1])
                    return reply
        except ChildReported as exc:
            failure = failure_from(exc.info)
            self._emit_out(where, failure.out)
            raise failure.error(where) from None
        except ChildDied as exc:
            rule, message = breach_of(child, exc, self.limits)
            raise JobFailed(message=f"{where} died: {message}", rule=rule) from None
        except ChildProtocolError as exc:
            raise JobFailed(message=f"{where} sent a malformed frame: {exc}",
                            rule="protocol") from None
        except trio.TooSlowError:
            await child.kill()
            raise JobFailed(message=f"{where} ran for more than {timeout:g} s (wall_seconds)",
                            rule="wall time") from None

    def _emit_out(self, where: str, text: Any) -> None:
        if isinstance(text, str) and text:
            self.on_output(where, text)

    def _report(self) -> None:
        self.progress.waiting = self.machine.waiting()
        self.progress.workers = self.machine.counts()  # not per result: one per voter
        self.on_progress(self.progress)
        self.changed.notify()

    # --- the job -------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> Path:
        """Run the job; returns the results folder (inside ``work_dir``).

        ``task_status.started()`` is called once the job's children may be spawned and
        workers may join (ports start then)."""
        if self.journal is not None:
            # Resume: results_dir as the last checkpoint had it (made anew either way).
            await trio.to_thread.run_sync(restore, self.recovered, self.results_dir)
            if not self.recovered.meta:
                self.journal.journal.meta(partitions=self.partitions)
            if self.journal.kept:
                self.on_log(f"resumed: {self.journal.kept} results kept from before the "
                            f"chief restarted ({len(self.recovered.merged)} of them merged)")
        else:
            self.results_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.kind == "script":
            # Workers see the script alone, as on a remote worker: `source` is the chief's.
            self.worker_dir = self.work_dir / "package"
            self.worker_dir.mkdir(exist_ok=True)
            shutil.copy2(self.spec.root / str(self.spec.script), self.worker_dir)
        try:
            # The nursery would wrap every failure in an exception group; callers get
            # the failure itself.
            with trio.CancelScope() as self._scope, collapse_groups():
                if self._cancelled:
                    self._scope.cancel()  # cancelled before it ran
                async with trio.open_nursery() as self.watchers:
                    self.watchers.start_soon(self._tick)
                    self.watchers.start_soon(self._dispatcher)
                    if self.journal is not None:
                        self.watchers.start_soon(self.journal.writer, self.fail)
                    for port in self.served:
                        await self.watchers.start(port.serve, self)
                    task_status.started()
                    if self.spec.kind == "script":
                        await run_script(self)
                    else:
                        await self._run_package()
                    self.watchers.cancel_scope.cancel()
        finally:
            self.watchers = None
            self.machine.phase = None
        if self._failure is not None:
            raise self._failure
        if self._scope.cancelled_caught:
            raise JobFailed(message="the job was cancelled", rule="cancelled")
        self.progress.phase = "done"
        self._report()
        return self.results_dir

    def fail(self, exc: BaseException) -> None:
        """Stop the job with ``exc``."""
        if self._failure is None:
            self._failure = exc
        if self._scope is not None:
            self._scope.cancel()

    def cancel(self) -> None:
        """Stop the job at the user's request (also before it started running)."""
        self._cancelled = True
        if self._scope is not None:
            self._scope.cancel()

    async def _tick(self) -> None:
        while True:
            await trio.sleep(TICK_SECONDS)
            self.machine.tick(time.monotonic())
            news = self.handover.news()
            if news:
                self.on_log(news)
            waiting = self.machine.waiting()
            if waiting != self.progress.waiting:
                if waiting:
                    self.on_log(f"waiting: {waiting}")
                self._report()
            self._changed()

    def _begin(self, kind: str, items: list[Any] | None, accept: Callable[[int, Any], None],
               load: Callable[[int], Any] | None = None, *, label: str | None = None,
               settled: set[int] | None = None) -> None:
        now = time.monotonic()
        old = self.machine.phase
        if old is not None:
            log.info("job %s: %s phase took %.2f s", self.spec.options.name, old.kind,
                     now - self._phase_started)
        self._phase_started = now
        self._accept, self._load = accept, load
        self.machine.begin(kind, items, settled)
        self.progress = Progress(phase=label or kind, total=len(items) if items else None,
                                 workers=self.machine.counts(), started=self.progress.started)
        self._changed()
        self._report()

    async def _wait_finished(self) -> None:
        while not self.machine.finished:
            await self.changed.wait()

    async def _split_loop(self, where: str) -> None:
        """Pull the splitter lazily: only when workers have room for more fragments."""
        child = await self._spawn("split")
        try:
            while not self.machine.table.exhausted:
                wanted, table = self.machine.wanted(), self.machine.table  # see SPLIT_AT_LEAST
                if wanted == 0 or (wanted < SPLIT_AT_LEAST
                                   and table.in_flight - table.queued >= SPLIT_AT_LEAST):
                    await self.changed.wait()
                    continue
                reply = await self._call(child, ["next", min(wanted, MAX_BATCH)], where,
                                         timeout=self.limits.wall_seconds)
                fragments, exhausted = reply[1], reply[2]
                if not isinstance(fragments, list) or not all(
                        isinstance(f, bytes) for f in fragments):
                    raise JobFailed(message=f"the {where} child sent a malformed reply",
                                    rule="protocol")
                if self.journal is not None and self.machine.phase is not None:
                    self.journal.split(self.machine.phase.kind, self.machine.table.produced,
                                       fragments, where)
                self.machine.split(fragments, bool(exhausted), where=where)
                if self.handover.waiting:  # handed-in items that waited for this split
                    self._adopt(lambda now: self.handover.retry(self.machine, now, self._load))
                if exhausted:
                    self.progress.total = self.machine.table.total
                self._changed()
                self._report()
        finally:
            await child.aclose()

    async def _run_package(self) -> None:
        buffer = CausalBuffer(ordered=self.spec.options.ordered, spill_dir=self.work_dir)
        logged = self.resumed("process")
        merged = self.recovered.merged
        if self.journal is not None:
            self.journal.merged = merged
        if buffer.ordered:
            buffer.skip_to(merged.low)
        for seq in sorted(logged):
            if seq not in merged:
                buffer.add(seq, logged[seq].payload)  # type: ignore[arg-type]
        settled = set(logged) | set(range(merged.low)) | merged.above
        self._begin("process", None, buffer.add, label="fragments", settled=settled)
        self.progress.done = len(merged)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._split_loop, "splitter")
            nursery.start_soon(self._merge_loop, buffer)

    async def _merge_loop(self, buffer: CausalBuffer) -> None:
        child = await self._spawn("merge")
        pacer = Pacer(MAX_BATCH * 4)
        try:
            while True:
                batch = buffer.pop_ready(max_items=pacer.size())
                if not batch:
                    if self.machine.finished and not len(buffer):
                        break
                    await self.changed.wait()
                    continue
                started = time.monotonic()
                await self._call(child, ["merge", [[s, d] for s, d in batch]], "merger",
                                 timeout=self.limits.wall_seconds)
                pacer.record(len(batch), time.monotonic() - started)
                self.progress.done += len(batch)
                self._report()
                if self.journal is not None:
                    await self.journal.merged_batch([s for s, _ in batch], self.results_dir)
            await self._call(child, ["finalize"], "finalize", timeout=self.limits.wall_seconds)
            check_output_quota(self.results_dir, self.limits)
        finally:
            await child.aclose()
            buffer.close()

    def resumed(self, kind: str) -> dict[int, Logged]:
        """Results of phase ``kind`` kept from an earlier run of the chief (none without
        a journal)."""
        if self.journal is None:
            return {}
        return self.journal.resumed(kind, self.on_accepted)
