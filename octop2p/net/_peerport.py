"""A linked donor as a worker of one job this node is chief of.

The runner treats it like any worker: it joins, announces credits, takes what the job
machine assigns, and answers. This port adds what the network needs: fragments go out
signed by the chief and bound to the job's package, several in one write; results come
back signed by the donor and are bound to the fragment they answer before the runner
sees them. Nothing here decides who gets what: that is the job machine's.

A result that answers no fragment sent on this link may be one the donor computed for
this chief before it restarted (a *handover*, docs/jobs.md "When the chief restarts"):
it goes to the runner with a check that this run's fragment of that number is the one
the donor ran (the digest its result names), and the machine decides whether it counts.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack
import trio

from octop2p.engine._handover import HandedIn
from octop2p.engine._machine import WorkFailure
from octop2p.engine._runner import JobRunner
from octop2p.engine._slot import MAX_SLOT_WINDOW, Done, Work
from octop2p.net._peer import LinkClosed, PeerLink
from protocol import Envelope, EnvelopeKind, Fragment, NodeIdentity, Result, Task

log = logging.getLogger(__name__)

#: The rule of a worker's Failure that hands a fragment back unrun (it counts no attempt).
NOT_RUN = "not run"
#: The rule of a worker's Failure that names a fragment it still runs for this chief's
#: earlier run (a handover): no vote, its result follows.
STILL_RUNNING = "still running"
#: Handed-in results and running fragments a donor may name, per core (its window, the
#: results it had just sent, and those it held): more are dropped.
MAX_HANDED_IN_PER_CORE = 3 * MAX_SLOT_WINDOW
#: Cores a donor's credits are sized by, at most, whatever its Hello claims: credits make
#: the chief pull the splitter ahead, so a peer must not be able to ask for the whole job.
MAX_CLAIMED_CORES = 64
TASKS = {"process": Task.PROCESS, "map": Task.MAP, "reduce": Task.REDUCE}
KINDS = {task: kind for kind, task in TASKS.items()}
_UNSIGNED = bytes(64)  # a signature's place, where only an envelope's digest is wanted


def encode_parts(parts: list[bytes]) -> bytes:
    """Map outputs and reduce inputs travel as one msgpack list of opaque blobs."""
    return msgpack.packb(parts, use_bin_type=True)


def decode_parts(data: bytes, count: int | None = None) -> list[bytes]:
    """Inverse of :func:`encode_parts`, checked: a list of bytes (of ``count`` items)."""
    try:
        parts = msgpack.unpackb(data, raw=False, max_array_len=1 << 20, max_map_len=0,
                                max_str_len=0)
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ValueError("not a list of parts") from None
    if not isinstance(parts, list) or not all(isinstance(p, bytes) for p in parts):
        raise ValueError("not a list of parts")
    if count is not None and len(parts) != count:
        raise ValueError(f"expected {count} parts, got {len(parts)}")
    return parts


class PeerPort:
    """One linked donor working on one job (see the module docstring)."""

    def __init__(self, runner: JobRunner, link: PeerLink, identity: NodeIdentity,
                 job_id: bytes, package_hash: bytes) -> None:
        self.runner = runner
        self.link = link
        self.worker = link.peer_id
        self.identity = identity
        self.job_id = job_id
        self.package_hash = package_hash
        self._queue: list[Work] = []
        self._wake = trio.Event()
        # digest of each fragment sent -> (its kind, its seq): an answer names the fragment
        # it answers by that digest, so a late map result is never taken for the reduce
        # task of the same number.
        self._sent: dict[bytes, tuple[str, int]] = {}
        cores = max(1, min(link.cores, MAX_CLAIMED_CORES))
        self._handover_room = MAX_HANDED_IN_PER_CORE * cores
        runner.join(self.worker, self.worker, MAX_SLOT_WINDOW * cores, self)

    def deliver(self, worker: str, works: list[Work]) -> None:
        self._queue.extend(works)
        self._wake.set()

    async def serve(self) -> None:
        """Send fragments whenever the runner delivers some, until the link closes."""
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                works, self._queue = self._queue, []
                # What was settled while it waited here (behind a slow write, say) is
                # not sent: its credit goes back. (Once sent, the donor runs it.)
                is_open = self.runner.machine.is_open
                fresh = [w for w in works if is_open(w.kind, w.seq)]
                if len(fresh) < len(works):
                    self.credit(len(works) - len(fresh))
                if fresh:  # small fragments share a write
                    await self.link.send_many([self._sign(w) for w in fresh])
        except LinkClosed:
            pass
        finally:
            self.close()

    def _sign(self, work: Work) -> Fragment:
        envelope = Envelope.sign(self.identity, EnvelopeKind.FRAGMENT, self.job_id, work.seq,
                                 _wire(work), ref=self.package_hash)
        self._sent[envelope.digest] = (work.kind, work.seq)
        return Fragment(task=TASKS[work.kind], envelope=envelope)

    def close(self) -> None:
        """The donor is gone: its fragments go to others."""
        self.runner.leave(self.worker)

    def credit(self, n: int) -> None:
        self.runner.credit(self.worker, n)

    def on_result(self, message: Result) -> None:
        """A signed result (or failure) from the donor; the protocol checked the signature."""
        envelope = message.envelope
        seq = envelope.seq
        sent = self._sent.get(envelope.ref)
        if sent is None:
            self._hand_in(message)  # else late, duplicate, or never sent: dropped
            return
        kind, sent_seq = sent
        if envelope.job_id != self.job_id or seq != sent_seq:
            # Dropped, and the fragment still waits for its real answer.
            log.warning("worker %s sent a result for another fragment; dropped", self.link.short)
            return
        del self._sent[envelope.ref]
        failure = message.failure
        if failure is not None:
            work = Work(kind, seq, b"")
            if failure.rule == NOT_RUN:
                self.runner.gave_back(self.worker, [work])
                return
            self.runner.failed(self.worker, work, WorkFailure(
                message=f"{failure.message} (on worker {self.link.short})",
                rule=failure.rule, traceback=failure.traceback, file=failure.file,
                line=failure.line, deterministic=bool(failure.traceback)))
            return
        payload: Any = envelope.payload
        problem = self._check(kind, payload)
        if isinstance(problem, WorkFailure):
            self.runner.failed(self.worker, Work(kind, seq, b""), problem)
            return
        self.runner.results(self.worker, [Done(kind, seq, problem, message.out)])

    def _hand_in(self, message: Result) -> None:
        """A result (or a running fragment) this donor computed for the chief's run
        before it restarted; bounded, and checked by the machine before it counts."""
        envelope, failure = message.envelope, message.failure
        phase = self.runner.machine.phase
        if phase is None or envelope.job_id != self.job_id or (
                failure is not None and failure.rule != STILL_RUNNING):
            return  # a failure from before the restart: the fragment runs again
        if self._handover_room <= 0:
            if self._handover_room == 0:
                log.warning("worker %s handed in more results than it can hold; the rest "
                            "are dropped", self.link.short)
            self._handover_room -= 1
            return
        self._handover_room -= 1
        kind, seq, ref = phase.kind, envelope.seq, envelope.ref
        data = None
        if failure is None:
            data = self._check(kind, envelope.payload)
            if isinstance(data, WorkFailure):
                return  # malformed: that fragment is computed again
        author, job_id, package = self.identity.public_key, self.job_id, self.package_hash

        def matches(payload: Any) -> bool:  # the digest a signed fragment would have
            return Envelope(EnvelopeKind.FRAGMENT, author, job_id, seq, package, _UNSIGNED,
                            _wire(Work(kind, seq, payload))).digest == ref

        self.runner.handed_in(HandedIn(self.worker, kind, seq, matches, data))

    def _check(self, kind: str, payload: bytes) -> Any:
        """The result's payload as the runner takes it, or the failure it amounts to."""
        if kind == "map":
            try:
                return decode_parts(payload, self.runner.partitions)
            except ValueError as exc:
                log.warning("worker %s sent a malformed map result: %s", self.link.short, exc)
                return WorkFailure(str(exc), rule="protocol")
        limit = self.runner.limits.fragment_bytes
        if kind == "process" and len(payload) > limit:
            return WorkFailure(f"a result is {len(payload)} bytes; this job's limit is {limit}",
                               rule="result size", traceback="(measured by the chief)",
                               deterministic=True)
        return payload


def _wire(work: Work) -> bytes:
    """A fragment's payload as it travels (a reduce task's parts as one blob)."""
    return encode_parts(work.payload) if work.kind == "reduce" else work.payload
