"""The chief: drives one job from its splitter to its finished results folder.

Job code never runs here. The chief spawns sandboxed children through the fork server
(a ``split`` child, ``work`` children, a ``merge`` child) and moves opaque bytes between
them, with the pure :class:`Scheduler` deciding who gets what and the
:class:`CausalBuffer` deciding when a result may be merged.

Workers plug in through :class:`WorkerSlot`: a local slot owns one sandboxed child; the
networked node adds slots that stand for remote workers.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from octop2p.engine._children import ChildDied, ChildProtocolError, ChildReported, ForkServer
from octop2p.engine._groups import collapse_groups
from octop2p.engine._limits import Limits
from octop2p.engine._package import JobSpec
from octop2p.engine._reorder import CausalBuffer
from octop2p.engine._results import output_usage
from octop2p.engine._scheduler import FragmentFailed, Scheduler, Verdict
from octop2p.errors import JobFailed
from sandbox import Policy
from sandbox import describe_exit as _describe_exit

log = logging.getLogger(__name__)

#: Batches aim at this much work per round trip: long enough to amortise the pipe and
#: the scheduler, short enough that a slow fragment does not hold many others hostage.
BATCH_SECONDS = 0.05
MAX_BATCH = 256
#: A work child is replaced once it has used this share of its CPU rlimit, so that the
#: per-process RLIMIT_CPU acts as a per-fragment limit.
CPU_RECYCLE_SHARE = 0.5
#: How often, at most, the merger's output is summed while it runs.
QUOTA_SECONDS = 0.5
#: Outstanding credits one remote worker may hold, per core it announced (see the
#: worker's window of two batches per slot).
REMOTE_CREDITS_PER_CORE = 2 * MAX_BATCH
MAX_REMOTE_CREDITS = REMOTE_CREDITS_PER_CORE
#: How often the thread count of a child allowed several threads is read.
THREAD_POLL_SECONDS = 0.02


@dataclass
class Progress:
    """A snapshot of one job's progress, for progress bars and the node API."""

    phase: str
    done: int = 0
    total: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)


OutputSink = Callable[[str, str], None]  # (where, text)


class Pacer:
    """Adaptive batch size: aims every batch at BATCH_SECONDS of work."""

    def __init__(self) -> None:
        self.per_item = 0.0

    def size(self, fair_share: int) -> int:
        if self.per_item <= 0:
            return 1
        n = int(BATCH_SECONDS / self.per_item) or 1
        return max(1, min(n, MAX_BATCH, fair_share))

    def record(self, items: int, seconds: float) -> None:
        sample = seconds / max(items, 1)
        self.per_item = sample if self.per_item <= 0 else 0.7 * self.per_item + 0.3 * sample


@dataclass
class Phase:
    """The scheduling phase a job is in: its scheduler and what to do with results."""

    kind: str  # "process", "map" or "reduce"
    sched: Scheduler
    accept: Callable[[int, Any], None]
    load: Callable[[int], Any] | None = None


class _Changed:
    """Wakes every task waiting for the job's state to change."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


def describe_exit(returncode: int | None, *, limits: dict[str, int]) -> tuple[str | None, str]:
    """The rule a dead child broke; an unknown status means the sandbox itself stopped."""
    if returncode is None:
        return None, "the sandbox fork server stopped, so its children were lost"
    return _describe_exit(returncode, limits=limits)


def _threads_and_start(pid: int) -> tuple[int, int] | None:
    """(threads, start time) of process ``pid`` from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # After the command name, which may hold spaces: fields 3 on.
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[17]), int(fields[19])  # num_threads (20), starttime (22)
    except (OSError, IndexError, ValueError):
        return None


async def watch_threads(pid: int, limit: int) -> int | None:
    """Wait until process ``pid`` runs more than ``limit`` threads (returns how many)
    or ends (returns None).

    With threads = 1 seccomp refuses every new thread; above 1 it must allow them and
    cannot count them, so the node counts, from /proc, while the child lives. A burst
    of threads that starts and ends between two readings goes unseen: this bounds how
    many threads a job keeps, not how many it ever starts.
    """
    first = _threads_and_start(pid)
    if first is None:
        return None
    while True:
        now = _threads_and_start(pid)
        if now is None or now[1] != first[1]:  # gone, or the pid now names another process
            return None
        if now[0] > limit:
            return now[0]
        await trio.sleep(THREAD_POLL_SECONDS)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def job_failed_from(info: dict[str, Any], where: str) -> JobFailed:
    """Turn a child's error report into the user's error."""
    message = str(info.get("message") or "job code failed")
    file, line = info.get("file"), info.get("line")
    if not file:
        message = f"{message} (in {where})"
    return JobFailed(
        message=message,
        traceback=str(info.get("traceback") or ""),
        rule=info.get("rule"),
        file=file,
        line=line,
    )


class Chief:
    """Runs one job to completion on a fork server with ``workers`` local worker slots."""

    def __init__(
        self,
        spec: JobSpec,
        forkserver: ForkServer,
        *,
        workers: int,
        work_dir: Path,
        layers: frozenset[str],
        on_progress: Callable[[Progress], None] | None = None,
        on_output: OutputSink | None = None,
        remote: bool = False,
    ) -> None:
        self.spec = spec
        self.limits: Limits = spec.options.limits
        self.fs = forkserver
        # With remote workers the chief may have no local slot of its own (not donating).
        self.workers = workers if remote else max(1, workers)
        self.remote = remote
        self.remote_workers: set[str] = set()
        # Credits announced before the first phase began (a worker that has the package
        # cached asks at once): the first phase starts with them. None once it has begun.
        self._early_credits: dict[str, int] | None = {}
        self.phase: Phase | None = None
        self._failure: BaseException | None = None
        self._scope: trio.CancelScope | None = None
        self._watchers: trio.Nursery | None = None  # thread counters, while the job runs
        self.work_dir = work_dir
        self.results_dir = work_dir / "results"
        self.layers = layers
        self.on_progress = on_progress or (lambda p: None)
        self.on_output = on_output or (lambda where, text: None)
        self.changed = _Changed()
        self.worker_counts: dict[str, int] = {}  # accepted results per worker, whole job
        self.accepted = 0  # fragments and tasks accepted, every phase
        self._quota_checked = 0.0
        self._phase_started = time.monotonic()
        self._parked: dict[str, Any] = {}  # idle work children, kept for the next phase
        self.progress = self._phase("starting")
        self.partitions = spec.options.partitions or max(2, 2 * self.workers)
        if spec.options.redundancy > self.workers and not remote:
            raise JobFailed(
                message=(
                    f"redundancy = {spec.options.redundancy} needs at least that many "
                    f"workers, and this run has {self.workers}"
                ),
                rule="redundancy",
            )

    # --- children ------------------------------------------------------------------------

    def _policy(self, role: str, job_dir: Path) -> Policy:
        writes = (str(self.results_dir),) if role == "merge" else ()
        return Policy(
            read_paths=(str(job_dir),),
            write_paths=writes,
            memory_bytes=self.limits.memory_mb << 20,
            cpu_seconds=self.limits.cpu_seconds,
            fsize_bytes=(self.limits.merge_output_mb << 20) if role == "merge" else 0,
            max_threads=self.limits.threads,
            layers=self.layers,
        )

    def _child_spec(self, role: str) -> dict[str, Any]:
        job_dir = self._worker_dir if role == "work" else self.spec.root
        return {
            "role": role,
            "kind": self.spec.kind,
            "job_dir": str(job_dir),
            "script": self.spec.script,
            "results_dir": str(self.results_dir) if role == "merge" else None,
            "limits": self.limits.to_dict(),
            "options": {"partitions": self.partitions, "map_batch": self.spec.options.map_batch},
            "policy": self._policy(role, job_dir).to_dict(),
        }

    async def spawn(self, role: str) -> Any:
        """A ready child for ``role``; a failure while importing job code fails the job."""
        max_frame = self.limits.fragment_bytes * 2 + (64 << 20)
        child = await self.fs.spawn(self._child_spec(role), max_frame=max_frame)
        if self.limits.threads > 1 and self._watchers is not None:
            # From the start: job code may start threads as it is imported.
            self._watchers.start_soon(self._watch_threads, child, role)
        try:
            with trio.fail_after(self.limits.wall_seconds):
                ready = await child.receive()
        except ChildReported as exc:
            await child.aclose()
            raise self._reported(exc, f"the {role} child, while loading the job") from None
        except ChildDied as exc:
            await child.aclose()
            rule, message = describe_exit(exc.returncode, limits=self.limits.to_dict())
            raise JobFailed(message=f"the {role} child died while loading the job: {message}",
                            rule=rule) from None
        except trio.TooSlowError:
            await child.aclose()
            raise JobFailed(
                message=f"importing the job took more than {self.limits.wall_seconds} s "
                "(wall_seconds)",
                rule="wall time",
            ) from None
        if ready[0] != "ready":
            await child.aclose()
            raise JobFailed(message=f"the {role} child said {ready[0]!r} instead of ready")
        self._emit_out(role, ready[1].get("out", "") if isinstance(ready[1], dict) else "")
        return child

    async def _watch_threads(self, child: Any, role: str) -> None:
        """Fail the job, and kill ``child``, if it runs more threads than allowed."""
        limit = self.limits.threads
        found = await watch_threads(child.pid, limit)
        if found is None:
            return
        await child.kill()
        self.fail(JobFailed(
            message=f"the {role} child ran {found} threads at once, more than this job's "
            f"limit of {limit} (limits.threads)",
            rule="threads",
        ))

    def _reported(self, exc: ChildReported, where: str, out_where: str | None = None) -> JobFailed:
        """The user's error for a child's error report, once what it printed is passed on."""
        self._emit_out(out_where or where, exc.info.get("out", ""))
        return job_failed_from(exc.info, where)

    def _phase(self, name: str, total: int | None = None) -> Progress:
        return Progress(phase=name, total=total, workers=self.worker_counts)

    def _emit_out(self, where: str, text: Any) -> None:
        if isinstance(text, str) and text:
            self.on_output(where, text)

    def _report(self) -> None:
        self.on_progress(self.progress)
        self.changed.notify()

    # --- the job -------------------------------------------------------------------------

    async def run(self) -> Path:
        """Run the job; returns the results folder (inside ``work_dir``)."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        if self.spec.kind == "script":
            # Workers see the script alone, as on a remote worker.
            self._worker_dir = self.work_dir / "package"
            self._worker_dir.mkdir(exist_ok=True)
            shutil.copy2(self.spec.root / str(self.spec.script), self._worker_dir)
        else:
            self._worker_dir = self.spec.root
        try:
            # The thread counters' nursery would wrap every failure in an exception
            # group; callers get the failure itself, as from a job without counters.
            with trio.CancelScope() as self._scope, collapse_groups():
                async with trio.open_nursery() as self._watchers:
                    if self.spec.kind == "script":
                        await self._run_script()
                    else:
                        await self._run_package()
                    self._watchers.cancel_scope.cancel()
        finally:
            self._watchers = None
            self.phase = None
            await self._close_parked()
        if self._failure is not None:
            raise self._failure
        if self._scope.cancelled_caught:
            raise JobFailed(message="the job was cancelled", rule="cancelled")
        return self.results_dir

    def fail(self, exc: BaseException) -> None:
        """Stop the job with ``exc`` (called from outside, e.g. for a remote worker's report)."""
        if self._failure is None:
            self._failure = exc
        if self._scope is not None:
            self._scope.cancel()

    def cancel(self) -> None:
        """Stop the job at the user's request."""
        if self._scope is not None:
            self._scope.cancel()

    def _enter_phase(self, phase: Phase) -> None:
        now = time.monotonic()
        if self.phase is not None:
            log.info("job %s: %s phase took %.2f s", self.spec.options.name, self.phase.kind,
                     now - self._phase_started)
        self._phase_started = now
        # Remote workers keep the room they announced when the job moves on (map -> reduce).
        if self.phase is not None:
            for worker in self.remote_workers:
                phase.sched.add_credits(worker, self.phase.sched.credits_of(worker))
        for worker, credits in (self._early_credits or {}).items():
            phase.sched.add_credits(worker, credits)
        self._early_credits = None
        self.phase = phase
        self.changed.notify()

    # --- remote workers (the networked node calls these) ---------------------------------

    def remote_credits(self, worker: str, credits: int, cap: int = MAX_REMOTE_CREDITS) -> None:
        """A remote worker has room for ``credits`` more fragments (at most ``cap`` in all:
        credits make the chief pull the splitter ahead, so a worker cannot ask for the
        whole job)."""
        self.remote_workers = self.remote_workers | {worker}
        if self.phase is not None:
            room = max(0, cap - self.phase.sched.credits_of(worker))
            self.phase.sched.add_credits(worker, min(credits, room))
            self.changed.notify()
        elif self._early_credits is not None:
            self._early_credits[worker] = self._early_credits.get(worker, 0) + credits

    def remote_take(self, worker: str) -> tuple[str, list[tuple[int, Any]]]:
        """Fragments to send to ``worker`` now: (kind, [(seq, payload)])."""
        phase = self.phase
        if phase is None:
            return "", []
        assigned = phase.sched.assign(worker, time.monotonic())
        if assigned:
            self.changed.notify()  # the splitter may pull more now
        load = phase.load
        return phase.kind, [(a.seq, load(a.payload) if load else a.payload) for a in assigned]

    def remote_result(self, worker: str, kind: str, seq: int, payload: Any, digest: bytes) -> bool:
        """A remote worker's verified result; returns False if it was a duplicate."""
        phase = self.phase
        if phase is None or phase.kind != kind:
            return False
        verdict = phase.sched.complete(worker, seq, digest)
        if verdict is Verdict.ACCEPT:
            phase.accept(seq, payload)
            self.accepted += 1
            self.worker_counts[worker] = self.worker_counts.get(worker, 0) + 1
            if kind != "process":
                self.progress.done = phase.sched.done
            self._report()
        return verdict is not Verdict.DUPLICATE

    def remote_failed(self, worker: str, kind: str, seq: int, error: JobFailed, *,
                      retry: bool) -> None:
        """A remote worker could not finish ``seq``: retry it elsewhere, or fail the job."""
        phase = self.phase
        if phase is None or phase.kind != kind:
            return
        if not retry:
            self.fail(error)
            return
        try:
            phase.sched.fail(worker, seq)
        except FragmentFailed as failed:
            self.fail(JobFailed(message=f"fragment {failed.seq} failed {failed.attempts} "
                                f"times: {error.message}", rule=error.rule))
        self.changed.notify()

    def remote_giveback(self, worker: str, kind: str, seq: int) -> None:
        """A remote worker hands ``seq`` back unrun (its child died on another fragment)."""
        phase = self.phase
        if phase is not None and phase.kind == kind:
            phase.sched.giveback(worker, seq)
            self.changed.notify()

    def remote_lost(self, worker: str) -> None:
        """A remote worker is gone: its fragments go to others."""
        self.remote_workers = self.remote_workers - {worker}
        if self._early_credits is not None:
            self._early_credits.pop(worker, None)
        if self.phase is not None:
            self.phase.sched.release(worker)
            self.changed.notify()

    def expire_leases(self) -> None:
        """End leases past their deadline (a worker that went quiet on one fragment)."""
        if self.phase is not None and self.phase.sched.expire(time.monotonic()):
            self.changed.notify()

    async def _close_parked(self) -> None:
        for child in self._parked.values():
            await child.aclose()
        self._parked.clear()

    async def _run_package(self) -> None:
        opts = self.spec.options
        sched = Scheduler(prefetch=2 * self.workers, redundancy=opts.redundancy,
                          lease_seconds=self.limits.wall_seconds * 4)
        buffer = CausalBuffer(ordered=opts.ordered, spill_dir=self.work_dir)
        self.progress = self._phase("fragments")
        merged = 0

        def accept(seq: int, data: bytes) -> None:
            buffer.add(seq, data)

        self._enter_phase(Phase("process", sched, accept))

        async def merge_loop() -> None:
            nonlocal merged
            child = await self.spawn("merge")
            pacer = Pacer()
            try:
                while True:
                    batch = buffer.pop_ready(max_items=pacer.size(MAX_BATCH))
                    if not batch:
                        if sched.finished and not len(buffer):
                            break
                        await self.changed.wait()
                        continue
                    started = time.monotonic()
                    await self._call(child, ["merge", [[s, d] for s, d in batch]], "merger",
                                     timeout=self.limits.wall_seconds)
                    pacer.record(len(batch), time.monotonic() - started)
                    merged += len(batch)
                    self.progress.done = merged
                    self._check_output_quota(throttled=True)
                    self._report()
                await self._call(child, ["finalize"], "finalize", timeout=self.limits.wall_seconds)
                self._check_output_quota()
            finally:
                await child.aclose()
                buffer.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._split_loop, sched)
            for i in range(self.workers):
                nursery.start_soon(self._work_loop, f"local-{i}", sched, "process", accept)
            nursery.start_soon(merge_loop)

    async def _run_script(self) -> None:
        opts = self.spec.options
        parts_dir = self.work_dir / "partitions"
        parts_dir.mkdir(exist_ok=True)
        part_files = [open(parts_dir / f"{r}.bin", "w+b") for r in range(self.partitions)]
        try:
            # Map: source batches -> partitioned intermediate pairs, appended to disk.
            sched = Scheduler(prefetch=2 * self.workers, redundancy=opts.redundancy,
                              lease_seconds=self.limits.wall_seconds * 4)
            self.progress = self._phase("map")

            def store_parts(seq: int, parts: list[bytes]) -> None:
                for f, part in zip(part_files, parts, strict=True):
                    f.write(len(part).to_bytes(8, "big"))
                    f.write(part)

            self._enter_phase(Phase("map", sched, store_parts))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._split_loop, sched)
                for i in range(self.workers):
                    nursery.start_soon(self._work_loop, f"local-{i}", sched, "map", store_parts)
                nursery.start_soon(self._wait_finished, sched)

            # Reduce: one task per partition.
            rsched = Scheduler(prefetch=0, redundancy=opts.redundancy,
                               lease_seconds=self.limits.wall_seconds * 4)
            rsched.add_fragments(list(range(self.partitions)))
            rsched.mark_exhausted()
            self.progress = self._phase("reduce", total=self.partitions)
            reduced: dict[int, bytes] = {}

            def load_partition(r: int) -> list[bytes]:
                f = part_files[r]
                f.seek(0)
                out = []
                while header := f.read(8):
                    out.append(f.read(int.from_bytes(header, "big")))
                return out

            def store_reduced(seq: int, data: bytes) -> None:
                reduced[seq] = data

            self._enter_phase(Phase("reduce", rsched, store_reduced, load_partition))

            async with trio.open_nursery() as nursery:
                for i in range(min(self.workers, self.partitions)):
                    nursery.start_soon(self._work_loop, f"local-{i}", rsched, "reduce",
                                       store_reduced, load_partition)
                nursery.start_soon(self._wait_finished, rsched)
        finally:
            for f in part_files:
                f.close()
            shutil.rmtree(parts_dir, ignore_errors=True)

        # Final: every reduced pair in key order, in one chief-side child.
        log.info("job %s: reduce phase took %.2f s", self.spec.options.name,
                 time.monotonic() - self._phase_started)
        self._phase_started = time.monotonic()
        self.progress = self._phase("final", total=1)
        self._report()
        output = open(self.results_dir / "output.txt", "w", encoding="utf-8")
        sink = self.on_output

        def tee(where: str, text: str) -> None:
            output.write(text)
            sink("final", text)

        self.on_output = tee
        child = await self.spawn("merge")
        try:
            await self._call(child, ["final", [reduced[r] for r in range(self.partitions)]],
                             "final", timeout=self.limits.wall_seconds)
        finally:
            self.on_output = sink
            output.close()
            await child.aclose()
        self._check_output_quota()
        log.info("job %s: final took %.2f s", self.spec.options.name,
                 time.monotonic() - self._phase_started)
        self.progress.done = 1
        self._report()

    # --- the loops -----------------------------------------------------------------------

    async def _call(
        self, child: Any, request: list[Any], where: str, *, timeout: float
    ) -> list[Any]:
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
            raise self._reported(exc, where) from None
        except ChildDied as exc:
            rule, message = describe_exit(exc.returncode, limits=self.limits.to_dict())
            raise JobFailed(message=f"{where} died: {message}", rule=rule) from None
        except ChildProtocolError as exc:
            raise JobFailed(message=f"{where} sent a malformed frame: {exc}",
                            rule="protocol") from None
        except trio.TooSlowError:
            await child.kill()
            raise JobFailed(
                message=f"{where} ran for more than {timeout:g} s (wall_seconds)",
                rule="wall time",
            ) from None

    async def _wait_finished(self, sched: Scheduler) -> None:
        """Keep a phase open until every fragment is accepted (remote workers included)."""
        while not sched.finished:
            await self.changed.wait()

    async def _split_loop(self, sched: Scheduler) -> None:
        """Pull the splitter lazily: only when workers have room for more fragments."""
        child = await self.spawn("split")
        where = "splitter" if self.spec.kind == "package" else "source"
        try:
            while not sched.exhausted:
                wanted = sched.wanted()
                if wanted == 0:
                    await self.changed.wait()
                    continue
                reply = await self._call(child, ["next", min(wanted, MAX_BATCH)], where,
                                         timeout=self.limits.wall_seconds)
                fragments, exhausted = reply[1], reply[2]
                if not isinstance(fragments, list) or not all(
                    isinstance(f, bytes) for f in fragments
                ):
                    raise JobFailed(message=f"the {where} child sent a malformed reply",
                                    rule="protocol")
                # Measured here, on the bytes, whatever the child claims.
                for i, data in enumerate(fragments):
                    if len(data) > self.limits.fragment_bytes:
                        raise JobFailed(
                            message=f"fragment {sched.produced + i + 1} is {len(data)} bytes; "
                            f"this job's limit is {self.limits.fragment_bytes}",
                            rule="fragment size",
                        )
                if sched.produced + len(fragments) > self.limits.max_fragments:
                    raise JobFailed(
                        message=f"the {where} produced more than {self.limits.max_fragments} "
                        "fragments (max_fragments); a splitter must be finite",
                        rule="finite splitter",
                    )
                sched.add_fragments(fragments)
                if exhausted:
                    sched.mark_exhausted()
                    self.progress.total = sched.total
                self._report()
        finally:
            await child.aclose()

    async def _work_loop(
        self,
        worker: str,
        sched: Scheduler,
        kind: str,
        accept: Callable[[int, Any], None],
        load: Callable[[int], Any] | None = None,
    ) -> None:
        """One local worker slot: a sandboxed work child fed by the scheduler."""
        child = self._parked.pop(worker, None)
        pacer = Pacer()
        crashes = 0
        try:
            while True:
                if child is None:
                    child = await self.spawn("work")
                fair = max(1, (sched.queued + sched.wanted()) // self.workers)
                want = 1 if kind == "reduce" else pacer.size(fair)
                if sched.offer_credits(worker, want):
                    self.changed.notify()  # the splitter may now pull for our credits
                assigned = sched.assign(worker, time.monotonic())
                if not assigned:
                    if sched.finished:
                        # Keep the child for the next phase of this job (map -> reduce).
                        self._parked[worker], child = child, None
                        return
                    await self.changed.wait()
                    continue
                started = time.monotonic()
                try:
                    await self._run_batch(child, worker, sched, kind, assigned, accept, load)
                except (ChildDied, trio.TooSlowError, ChildProtocolError) as exc:
                    crashes += 1
                    await self._lost_child(child, worker, sched, exc, assigned)
                    child = None
                    continue
                pacer.record(len(assigned), time.monotonic() - started)
                if child.cpu_seconds() > self.limits.cpu_seconds * CPU_RECYCLE_SHARE:
                    await child.aclose()
                    child = None
        finally:
            sched.release(worker)
            if child is not None:
                await child.aclose()

    async def _run_batch(
        self,
        child: Any,
        worker: str,
        sched: Scheduler,
        kind: str,
        assigned: list[Any],
        accept: Callable[[int, Any], None],
        load: Callable[[int], Any] | None,
    ) -> None:
        if kind == "reduce":
            (task,) = assigned
            await child.send(["reduce", task.seq, load(task.payload) if load else task.payload])
        else:
            await child.send([kind, [[a.seq, a.payload] for a in assigned]])
        pending = {a.seq for a in assigned}
        while pending:
            with trio.fail_after(self.limits.wall_seconds):
                try:
                    reply = await child.receive()
                except ChildReported as exc:
                    raise self._reported(exc, self._where(kind), f"{kind} {exc.seq}") from None
            if len(reply) < 3 or type(reply[1]) is not int:
                raise ChildProtocolError(f"a malformed reply {reply[0]!r}")
            seq, payload = reply[1], reply[2]
            if seq not in pending:
                raise ChildProtocolError(f"answered fragment {seq!r}, which it was not given")
            pending.discard(seq)
            self._emit_out(f"{kind} {seq}", reply[3] if len(reply) > 3 else "")
            if kind == "map" and not (
                isinstance(payload, list) and len(payload) == self.partitions
                and all(isinstance(part, bytes) for part in payload)
            ):
                raise ChildProtocolError(f"a map result must be {self.partitions} partitions")
            data = b"".join(payload) if isinstance(payload, list) else payload
            if not isinstance(data, bytes):
                raise ChildProtocolError("a result must be bytes")
            verdict = sched.complete(worker, seq, _digest(data))
            if verdict is Verdict.ACCEPT:
                accept(seq, payload)
                self.accepted += 1
                self.worker_counts[worker] = self.worker_counts.get(worker, 0) + 1
                if kind != "process":
                    self.progress.done = sched.done
                self._report()

    def _where(self, kind: str) -> str:
        return {"process": "process()", "map": "mapfn", "reduce": "reducefn"}[kind]

    async def _lost_child(
        self, child: Any, worker: str, sched: Scheduler, exc: BaseException, assigned: list[Any]
    ) -> None:
        """A work child died or ran out of time: retry its fragment on a fresh child."""
        rule: str | None
        if isinstance(exc, trio.TooSlowError):
            await child.kill()
            rule, message = "wall time", (
                f"ran for more than {self.limits.wall_seconds} s on one fragment "
                f"(wall_seconds = {self.limits.wall_seconds})"
            )
        elif isinstance(exc, ChildDied):
            rule, message = describe_exit(exc.returncode, limits=self.limits.to_dict())
        else:
            await child.kill()
            rule, message = "protocol", f"sent a malformed reply: {exc}"
        await child.aclose()
        leased = sched.leased_to(worker)
        log.warning("work child on %s lost with fragments %s: %s", worker, leased, message)
        if not leased:
            return
        try:
            # The first unanswered fragment is the one that killed it; the rest go back.
            sched.fail(worker, leased[0])
            for seq in leased[1:]:
                sched.giveback(worker, seq)
        except FragmentFailed as failed:
            raise JobFailed(
                message=f"fragment {failed.seq} failed {failed.attempts} times: {message}",
                rule=rule,
            ) from None
        self.changed.notify()

    def _check_output_quota(self, *, throttled: bool = False) -> None:
        """The merger's output stays under merge_output_mb and merge_output_files.

        Walking results_dir after every merge batch would put a folder walk on the hot
        path: ``throttled`` checks at most every QUOTA_SECONDS (RLIMIT_FSIZE bounds each
        file meanwhile); the check after finalize and final is always made.
        """
        now = time.monotonic()
        if throttled and now - self._quota_checked < QUOTA_SECONDS:
            return
        self._quota_checked = now
        limit = self.limits.merge_output_mb << 20
        most = self.limits.merge_output_files
        total, entries = output_usage(self.results_dir, stop_after=most)
        if entries > most:
            raise JobFailed(
                message=f"the merger made more than {most} files and folders in results_dir; "
                f"this job's limit is {most} (merge_output_files = {most})",
                rule="merge output",
            )
        if total > limit:
            raise JobFailed(
                message=f"the merger wrote {total} bytes to results_dir; this job's limit is "
                f"{limit} (merge_output_mb = {self.limits.merge_output_mb})",
                rule="merge output",
            )

