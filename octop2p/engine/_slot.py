"""One worker slot: a sandboxed work child fed with fragments, the same loop everywhere.

The chief's own cores (``octop2p run``, a node's own slots) and a donor serving a
remote chief both run :func:`drive_slot`. What differs is the :class:`SlotSink` that
answers go to: the runner's job machine, or a signed message to the chief.

The loop asks for credits, takes what arrives in its inbox in batches sized to about
BATCH_SECONDS of work, runs them in one child, and answers. A child that dies, runs out
of time or breaks the pipe protocol is replaced: the fragment it was on is reported
lost, the rest of its batch handed back unrun. A child is also replaced once it has used
half its CPU rlimit, so that the per-process RLIMIT_CPU acts as a per-fragment limit.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple, Protocol

import trio

from octop2p.engine._children import (
    Child,
    ChildDied,
    ChildProtocolError,
    ChildReported,
    ForkServer,
)
from octop2p.engine._headstart import child_spec as child_spec
from octop2p.engine._limits import Limits
from octop2p.engine._machine import WorkFailure
from sandbox import describe_exit as _describe_exit

log = logging.getLogger(__name__)

#: Batches aim at this much work per round trip: long enough to amortise the pipe and
#: the scheduler, short enough that a slow fragment does not hold many others hostage.
BATCH_SECONDS = 0.05
MAX_BATCH = 64
#: Fragments a slot asks for at first, before it knows how long one takes.
SLOT_CREDITS = 2
#: A slot's credits in flight grow to two batches: one runs while the next is on its way.
MAX_SLOT_WINDOW = 2 * MAX_BATCH
#: ... and to no more bytes than this (but at least SLOT_CREDITS fragments).
MAX_SLOT_WINDOW_BYTES = 16 << 20
CPU_RECYCLE_SHARE = 0.5
THREAD_POLL_SECONDS = 0.02
#: Answers that follow each other closely go out together, up to this many bytes.
FLUSH_BYTES = 1 << 20


class Work(NamedTuple):
    """One fragment (or map or reduce task) for a slot (a tuple: one is made for every
    fragment handed out, and a frozen dataclass costs four times as much to make)."""

    kind: str  # "process", "map" or "reduce"
    seq: int
    payload: Any  # bytes; a reduce task's list of partition blobs

    @property
    def size(self) -> int:
        p = self.payload
        return sum(map(len, p)) if isinstance(p, list) else len(p)


class Done(NamedTuple):
    """A slot's answer to one Work (a tuple, as Work is)."""

    kind: str
    seq: int
    payload: Any  # bytes; a map task's list of partitions
    out: str  # what the job printed meanwhile


class SlotSink(Protocol):
    """Where a slot's answers go."""

    flush_seconds: float

    async def results(self, done: list[Done]) -> None: ...

    async def failed(self, work: Work, failure: WorkFailure) -> None: ...

    async def gave_back(self, works: list[Work]) -> None: ...

    async def credits(self, n: int) -> None: ...

    def printed(self, where: str, text: str) -> None: ...

    def wants(self, work: Work) -> bool:
        """False once ``work``'s answer could no longer count (another copy's result
        was accepted, or its phase ended): the slot drops it unrun."""


class Pacer:
    """Adaptive batch size: aims every batch at BATCH_SECONDS of work."""

    def __init__(self, most: int = MAX_BATCH) -> None:
        self.per_item = 0.0
        self.most = most

    def size(self, fair_share: int | None = None) -> int:
        if self.per_item <= 0:
            return 1
        n = int(BATCH_SECONDS / self.per_item) or 1
        return max(1, min(n, self.most, fair_share or self.most))

    def record(self, items: int, seconds: float) -> None:
        sample = seconds / max(items, 1)
        self.per_item = sample if self.per_item <= 0 else 0.7 * self.per_item + 0.3 * sample


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


def failure_from(info: dict[str, Any]) -> WorkFailure:
    """A child's error report (the job's code raised, or broke a rule it could see)."""
    line = info.get("line")
    return WorkFailure(
        message=str(info.get("message") or "job code failed"),
        rule=str(info["rule"]) if info.get("rule") else None,
        traceback=str(info.get("traceback") or ""),
        file=str(info["file"]) if info.get("file") else None,
        line=line if isinstance(line, int) and line >= 0 else None,
        deterministic=True,
        out=str(info.get("out") or ""),
    )


class SpawnFailed(Exception):
    """A child could not be started or could not load the job."""

    def __init__(self, failure: WorkFailure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class ChildMaker:
    """Starts ready children from one spec; counts their threads where seccomp cannot."""

    def __init__(self, fs: ForkServer, spec: dict[str, Any], limits: Limits,
                 watchers: trio.Nursery | None) -> None:
        self.fs = fs
        self.spec = spec
        self.limits = limits
        self.watchers = watchers

    async def spawn(self, on_printed: Any = None) -> Child:
        """A child that has imported the job's code; raises SpawnFailed."""
        role = self.spec["role"]
        limits = self.limits
        max_frame = limits.fragment_bytes * 2 + (64 << 20)
        child = (await self.fs.adopt(self.spec, max_frame=max_frame)
                 or await self.fs.spawn(self.spec, max_frame=max_frame))
        if limits.threads > 1 and self.watchers is not None:
            # From the start: job code may start threads as it is imported.
            self.watchers.start_soon(self._watch, child)
        try:
            with trio.fail_after(limits.wall_seconds):
                ready = await child.receive()
        except ChildReported as exc:
            await child.aclose()
            raise SpawnFailed(failure_from(exc.info)) from None
        except ChildDied as exc:
            await child.aclose()
            rule, message = breach_of(child, exc, limits)
            raise SpawnFailed(WorkFailure(
                f"the {role} child died while loading the job: {message}", rule=rule,
                deterministic=rule == "threads")) from None
        except trio.TooSlowError:
            await child.aclose()
            raise SpawnFailed(WorkFailure(
                f"importing the job took more than {limits.wall_seconds} s (wall_seconds)",
                rule="wall time")) from None
        if ready[0] != "ready" or not isinstance(ready[1], dict):
            await child.aclose()
            raise SpawnFailed(WorkFailure(f"the {role} child said {ready[0]!r} instead of "
                                          "ready", rule="protocol"))
        out = ready[1].get("out")
        if on_printed is not None and isinstance(out, str) and out:
            on_printed(role, out)
        return child

    async def _watch(self, child: Child) -> None:
        found = await watch_threads(child.pid, self.limits.threads)
        if found is not None:
            child.breach = (  # type: ignore[attr-defined]
                "threads", f"ran {found} threads at once, more than this job's limit of "
                f"{self.limits.threads} (limits.threads)")
            await child.kill()


def breach_of(child: Child, exc: ChildDied, limits: Limits) -> tuple[str | None, str]:
    """The rule a dead child broke: one the node saw itself, else its exit status."""
    breach = getattr(child, "breach", None)
    if breach is not None:
        return breach
    return describe_exit(exc.returncode, limits=limits.to_dict())


async def _next_batch(inbox: trio.MemoryReceiveChannel[Work], held: list[Work],
                      most: int) -> list[Work]:
    """The next batch from the inbox: one kind only, and a reduce task alone."""
    batch = [held.pop() if held else await inbox.receive()]
    kind = batch[0].kind
    while kind != "reduce" and len(batch) < most:
        try:
            work = inbox.receive_nowait()
        except trio.WouldBlock:
            break
        if work.kind != kind:
            held.append(work)
            break
        batch.append(work)
    return batch


def _drain(inbox: trio.MemoryReceiveChannel[Work], held: list[Work]) -> list[Work]:
    out, held[:] = list(held), []
    while True:
        try:
            out.append(inbox.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


async def drive_slot(maker: ChildMaker, inbox: trio.MemoryReceiveChannel[Work],
                     sink: SlotSink, *, partitions: int) -> None:
    """Run one slot until cancelled or its inbox closes (see the module docstring)."""
    limits = maker.limits
    child: Child | None = None
    window = SLOT_CREDITS
    pacer = Pacer()
    held: list[Work] = []
    await sink.credits(window)
    try:
        while True:
            try:
                taken = await _next_batch(inbox, held, pacer.size())
            except trio.EndOfChannel:
                return
            # A backup copy may have waited here while its original was accepted.
            batch = [w for w in taken if sink.wants(w)]
            started = time.monotonic()
            if batch and child is None:
                try:
                    child = await maker.spawn(sink.printed)
                except SpawnFailed as exc:
                    await sink.failed(batch[0], exc.failure)
                    await sink.gave_back(batch[1:])
                    batch = []
            if batch and child is not None:
                if await _run_batch(child, batch, sink, limits, partitions):
                    pacer.record(len(batch), time.monotonic() - started)
                    if child.cpu_seconds() > limits.cpu_seconds * CPU_RECYCLE_SHARE:
                        await child.aclose()
                        child = None
                else:
                    await child.aclose()
                    child = None
                    # What waits in the inbox goes back too, so that the queue, not this
                    # inbox, decides what a fresh child runs first: the fragment that
                    # killed the last one, before anything queued after it.
                    returned = _drain(inbox, held)
                    await sink.gave_back(returned)
                    window -= len(returned)
            # Give back what ran or was dropped, resized towards two batches of work in
            # flight.
            n = max(1, len(batch))
            size = sum(w.size for w in batch) // n if batch else 0
            target = max(SLOT_CREDITS, min(2 * pacer.size(), MAX_SLOT_WINDOW,
                                           MAX_SLOT_WINDOW_BYTES // max(1, size)))
            credits = max(1, len(taken) + target - window)
            window += credits - len(taken)
            await sink.credits(credits)
    finally:
        if child is not None:
            await child.aclose()


async def _run_batch(child: Child, batch: list[Work], sink: SlotSink, limits: Limits,
                     partitions: int) -> bool:
    """Run ``batch`` in ``child``; False if the child must be replaced."""
    pending = {w.seq: w for w in batch}
    try:
        if batch[0].kind == "reduce":
            (work,) = batch
            await child.send(["reduce", work.seq, work.payload])
        else:
            await child.send([batch[0].kind, [[w.seq, w.payload] for w in batch]])
        await _collect(child, pending, sink, limits, partitions)
        return True
    except ChildReported as exc:
        seq = exc.seq if exc.seq in pending else min(pending)
        await sink.failed(pending.pop(seq), failure_from(exc.info))
    except (ChildDied, trio.TooSlowError, ChildProtocolError) as exc:
        rule: str | None
        if isinstance(exc, trio.TooSlowError):
            await child.kill()
            rule, message = "wall time", (
                f"ran for more than {limits.wall_seconds} s on one fragment "
                f"(wall_seconds = {limits.wall_seconds})")
        elif isinstance(exc, ChildDied):
            rule, message = breach_of(child, exc, limits)
        else:
            await child.kill()
            rule, message = "protocol", f"sent a malformed reply: {exc}"
        if pending:
            log.warning("work child lost with fragments %s: %s", sorted(pending), message)
            # The first unanswered fragment is the one the child was on.
            first = pending.pop(min(pending))
            await sink.failed(first, WorkFailure(message, rule=rule,
                                                 deterministic=rule == "threads"))
    await sink.gave_back(sorted(pending.values(), key=lambda w: w.seq))
    return False


async def _collect(child: Child, pending: dict[int, Work], sink: SlotSink, limits: Limits,
                   partitions: int) -> None:
    """Read the child's replies to a batch; answers that come close together go out
    together, and a slow one does not hold back those already done."""
    done: list[Done] = []
    size = 0
    try:
        while pending:
            reply = None
            if child.replied:  # read with the last ones: no timer (one per reply adds up)
                reply = await child.receive()
            elif done:
                with trio.move_on_after(sink.flush_seconds):
                    reply = await child.receive()
            if done and (reply is None or size > FLUSH_BYTES):
                await sink.results(done)
                done, size = [], 0
            if reply is None:
                with trio.fail_after(limits.wall_seconds):
                    reply = await child.receive()
            answer = _answer(reply, pending, partitions)
            done.append(answer)
            size += len(answer.payload) if isinstance(answer.payload, bytes) else 0
    finally:
        if done:  # also before the failure answers of a batch that broke off
            await sink.results(done)


def _answer(reply: list[Any], pending: dict[int, Work], partitions: int) -> Done:
    """Check one reply of the child against what it was given."""
    if len(reply) < 3 or type(reply[1]) is not int:
        raise ChildProtocolError(f"a malformed reply {reply[0]!r}")
    seq, payload = reply[1], reply[2]
    work = pending.pop(seq, None)
    if work is None:
        raise ChildProtocolError(f"answered fragment {seq!r}, which it was not given")
    if work.kind == "map":
        if not (isinstance(payload, list) and len(payload) == partitions
                and all(isinstance(part, bytes) for part in payload)):
            raise ChildProtocolError(f"a map result must be {partitions} partitions")
    elif not isinstance(payload, bytes):
        raise ChildProtocolError("a result must be bytes")
    out = reply[3] if len(reply) > 3 and isinstance(reply[3], str) else ""
    return Done(work.kind, seq, payload, out)
