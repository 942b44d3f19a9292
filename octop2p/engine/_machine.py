"""The job machine: every rule of running one job, with no I/O, no clock and no trio.

Like ``protocol.Connection`` (and h11), it is a plain object: the runner feeds it what
happened (fragments split, a worker joined or left, credits, a result, a failure, a
tick of the clock) and asks it what to do (how many fragments to pull, which fragments
to send to which worker, whether a result is to be merged). Local slots and remote
donors are the same thing here: a *worker* with credits and a *voter*, the identity
whose results count once per fragment (a node; a slot of its own in ``octop2p run``).

Phases follow each other: ``process`` (split -> process -> merge) for a package, ``map``
then ``reduce`` for a MapReduce script. Workers keep their credits across phases.

Whatever must stop the job raises :class:`~octop2p.errors.JobFailed` from the method
that found it.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from octop2p.engine._limits import Limits
from octop2p.engine._scheduler import Assignment, FragmentFailed, FragmentTable, Verdict
from octop2p.errors import JobFailed

#: Fragments pulled from the splitter beyond what credits ask for, per worker.
PREFETCH_PER_WORKER = 2
#: Log lines kept until the runner drains them (a flood of events must not grow memory).
MAX_LOG = 1000


@dataclass(frozen=True)
class WorkFailure:
    """A worker could not produce a result for one fragment."""

    message: str
    rule: str | None = None
    traceback: str = ""
    file: str | None = None
    line: int | None = None
    #: The job's own code raised (a traceback): running it again gives the same answer,
    #: so it is a vote for "this fragment fails". Otherwise the child died or ran out of
    #: time, and another attempt may succeed.
    deterministic: bool = False
    out: str = ""  # what the job printed before it failed (not part of the vote)

    def error(self, where: str = "") -> JobFailed:
        message = f"{self.message} (in {where})" if where and not self.file else self.message
        return JobFailed(message=message, traceback=self.traceback, rule=self.rule,
                         file=self.file, line=self.line)

    def digest(self) -> bytes:
        text = f"{self.rule}\0{self.message}\0{self.file}\0{self.line}"
        return b"!" + hashlib.blake2b(text.encode(), digest_size=16).digest()


class Adoption(enum.Enum):
    """What became of a result (or a running fragment) handed in from a chief's earlier
    run (see :meth:`JobMachine.adopt`)."""

    ADOPTED = "adopted"  # it counts: a vote (perhaps accepted), or the worker's lease
    DONE = "done"  # the fragment is merged already, or this voter answered it: dropped
    MISMATCH = "mismatch"  # the chief's fragment of that number is another one: refused
    UNKNOWN = "unknown"  # no such fragment in this phase, or no such worker: dropped
    PENDING = "pending"  # the splitter has not produced it yet: ask again after a split


@dataclass
class Worker:
    """One worker as the machine sees it."""

    id: str
    voter: str
    cap: int  # credits it may hold at most (credits make the chief pull the splitter)
    credits: int = 0
    order: int = 0  # when it joined: dispatch serves workers in this order
    hungry: bool = False  # it waits in the machine's heap of workers with credits


def content_digest(data: bytes | list[bytes]) -> bytes:
    """What results vote with: a hash of their content, whoever computed them."""
    if type(data) is bytes and len(data) <= _ONE_PASS:  # the common case, in one call
        return hashlib.blake2b(len(data).to_bytes(8, "big") + data, digest_size=16).digest()
    h = hashlib.blake2b(digest_size=16)
    for part in data if isinstance(data, list) else (data,):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


#: Results up to this size are hashed from one copy with their length (same digest).
_ONE_PASS = 4096


@dataclass
class Trust:
    """What a chief knows of its workers' honesty: handed in when a job starts, read
    back as it runs (see docs/security.md, "Results you can trust").

    Under ``verify = "adaptive"`` a voter's results are replicated on another node until
    it has ``trust_after`` verified agreements; after that it runs single copies, and
    ``spot_share`` of them are checked anyway. A voter whose result loses a vote is
    quarantined: it gets no more work.
    """

    verify: str = "none"
    trust_after: int = 10
    spot_share: float = 0.05
    salt: bytes = b""  # makes the choice of spot checks this job's own
    agreed: dict[str, int] = field(default_factory=dict)  # verified agreements per voter
    trusted: set[str] = field(default_factory=set)  # trusted whatever (the chief's node)
    banned: dict[str, str] = field(default_factory=dict)  # quarantined voter -> why
    caught: list[tuple[str, str]] = field(default_factory=list)  # newly: (voter, why)

    def is_trusted(self, voter: str) -> bool:
        return voter in self.trusted or self.agreed.get(voter, 0) >= self.trust_after

    def spot_check(self, seq: int, phase: str) -> bool:
        h = hashlib.blake2b(self.salt + phase.encode() + seq.to_bytes(8, "big"),
                            digest_size=8).digest()
        return int.from_bytes(h, "big") < self.spot_share * 2**64


@dataclass
class Phase:
    kind: str  # "process", "map" or "reduce"
    table: FragmentTable
    failures: dict[bytes, WorkFailure] = field(default_factory=dict)


class JobMachine:
    """The rules of one job (see the module docstring)."""

    def __init__(self, limits: Limits, *, redundancy: int = 1, max_attempts: int = 3,
                 lease_seconds: float | None = None, trust: Trust | None = None,
                 backup_tasks: bool = True) -> None:
        if redundancy < 1:
            raise ValueError("redundancy must be at least 1")
        self.limits = limits
        self.redundancy = redundancy
        self.max_attempts = max_attempts
        # A lease runs from the worker's last sign of progress, and a worker's child is
        # killed after wall_seconds on one fragment: twice that, plus slack, means lost.
        self.lease_seconds = lease_seconds or 2.0 * limits.wall_seconds + 10.0
        self.workers: dict[str, Worker] = {}
        #: Workers with credits, as (order, id), for `dispatch`: a round costs what it
        #: hands out, not one look at every worker (stale entries are skipped there).
        self._hungry: list[tuple[int, str]] = []
        self._joined = 0
        self._credits = 0  # the sum of every worker's credits
        self._counts: dict[str, int] = {}  # accepted results each voter agreed on
        self.accepted = 0  # fragments and tasks accepted, every phase
        #: Who may be caught and quarantined, and how adaptive replication decides; None
        #: in `octop2p run`, where slots that disagree show a job that is not
        #: deterministic, not a dishonest machine.
        self.trust = trust
        self.backup_tasks = backup_tasks
        self._unchecked: dict[str, int] = {}  # single-copy results merged, per voter
        self.phase: Phase | None = None
        self._expired: set[tuple[str, int]] = set()  # (worker, seq) whose lease ran out
        self.log: list[str] = []
        #: The content digest of the last accepted result and the voters that agreed on
        #: it: the job's provenance, for its manifest.
        self.last_accepted: tuple[bytes, list[str]] = (b"", [])

    # --- phases --------------------------------------------------------------------------

    def begin(self, kind: str, items: list[Any] | None = None,
              settled: set[int] | None = None) -> None:
        """Start a phase; ``items`` are all its fragments (else the splitter fills it).
        ``settled``: fragments accepted before the chief restarted (never sent again)."""
        if self.phase is not None and self.phase.table.backups:
            old = self.phase.table
            self._note(f"{self.phase.kind}: {old.backups} backup tasks ran, "
                       f"{old.backups_won} finished first")
        table = FragmentTable(redundancy=self.redundancy, max_attempts=self.max_attempts,
                              lease_seconds=self.lease_seconds)
        table.backup_tasks = self.backup_tasks
        self._expired.clear()
        if settled:
            table.settle(settled)
        if items is not None:
            table.add(items)
            table.mark_exhausted()
        if self.trust is not None and self.trust.verify == "adaptive":
            trust = self.trust
            table.quorum_for = lambda voter, seq: (
                1 if trust.is_trusted(voter) and not trust.spot_check(seq, kind) else 2)
        self.phase = Phase(kind, table)

    @property
    def table(self) -> FragmentTable:
        assert self.phase is not None, "no phase has begun"
        return self.phase.table

    @property
    def finished(self) -> bool:
        """The current phase has every fragment accepted."""
        return self.phase is not None and self.phase.table.finished

    # --- the splitter --------------------------------------------------------------------

    def wanted(self) -> int:
        """How many fragments to pull from the splitter now: enough for every worker's
        credits and a small prefetch, never the whole input."""
        table = self.table
        if table.exhausted:
            return 0
        demand = self._credits + PREFETCH_PER_WORKER * max(1, len(self.workers))
        return max(0, demand - table.copies_queued())

    def split(self, fragments: list[bytes], exhausted: bool, *, where: str = "splitter") -> None:
        """Fragments from the splitter (or source), measured here whatever it claims."""
        table = self.table
        for i, data in enumerate(fragments):
            if len(data) > self.limits.fragment_bytes:
                raise JobFailed(
                    message=f"fragment {table.produced + i} is {len(data)} bytes; this "
                    f"job's limit is {self.limits.fragment_bytes}", rule="fragment size")
        if table.produced + len(fragments) > self.limits.max_fragments:
            raise JobFailed(
                message=f"the {where} produced more than {self.limits.max_fragments} "
                "fragments (max_fragments); a splitter must be finite", rule="finite splitter")
        table.add(fragments)
        if exhausted:
            table.mark_exhausted()

    # --- workers -------------------------------------------------------------------------

    def join(self, worker: str, voter: str, cap: int) -> None:
        """A worker is ready to take fragments of this job (once per worker); one of a
        quarantined voter gets nothing."""
        if self.trust is not None and voter in self.trust.banned:
            self._note(f"worker {worker} is quarantined: {self.trust.banned[voter]}")
            return
        if worker not in self.workers:
            self._joined += 1
            self.workers[worker] = Worker(worker, voter, max(1, cap), order=self._joined)

    def credit(self, worker: str, credits: int) -> None:
        """``worker`` has room for ``credits`` more fragments (within its cap)."""
        w = self.workers.get(worker)
        if w is not None and credits > 0:
            before, w.credits = w.credits, min(w.cap, w.credits + credits)
            self._credits += w.credits - before
            self._hunger(w)

    def _hunger(self, w: Worker) -> None:
        if w.credits and not w.hungry:
            w.hungry = True
            heapq.heappush(self._hungry, (w.order, w.id))

    def leave(self, worker: str) -> list[int]:
        """``worker`` is gone: its fragments go back to the queue; returns them."""
        w = self.workers.pop(worker, None)
        if w is None:
            return []
        self._credits -= w.credits
        if self.phase is None:
            return []
        seqs = self.table.release(worker)
        self._note(f"worker {worker} left" + (
            f"; fragments {_seqs(seqs)} go to others" if seqs else ""))
        return seqs

    def take(self, worker: str, now: float) -> list[Assignment]:
        """Fragments to send ``worker`` now, within its credits.

        Once the splitter is done, no worker takes more than its share of what is left,
        so that the last fragments (or a phase's few reduce tasks) spread over every
        worker instead of queueing behind one."""
        w = self.workers.get(worker)
        if w is None or not w.credits or self.phase is None:
            return []
        n = w.credits
        if self.table.exhausted:
            n = min(n, max(1, -(-self.table.copies_queued() // len(self.workers))))
        out = self.table.take(worker, w.voter, n, now)
        w.credits -= len(out)
        self._credits -= len(out)
        return out

    def is_open(self, kind: str, seq: int) -> bool:
        """A copy of ``kind`` ``seq`` may still count: its phase runs, and no result for
        it was accepted. A worker drops one that is not before it runs it."""
        phase = self.phase
        return phase is not None and phase.kind == kind and phase.table.is_open(seq)

    def backup_due(self, now: float) -> float:
        """When a copy out becomes late enough for a backup task (inf: none will); the
        runner hands work out again then."""
        return self.table.backup_due(now) if self.phase is not None else math.inf

    def dispatch(self, now: float) -> list[tuple[str, list[Assignment]]]:
        """Every worker's share of the queue, as far as credits go: each worker with
        credits is asked once, in the order they joined, until nothing is left to hand
        out (at a phase's tail, backup copies: then every one is asked)."""
        out: list[tuple[str, list[Assignment]]] = []
        if self.phase is None:
            return out
        table, asked = self.phase.table, []
        tail = table.exhausted and table.backup_tasks
        while self._hungry and (table.queued or tail):
            order, worker = heapq.heappop(self._hungry)
            w = self.workers.get(worker)
            if w is None or w.order != order:
                continue  # it left (and perhaps joined again, with an entry of its own)
            w.hungry = False
            taken = self.take(worker, now)
            if taken:
                out.append((worker, taken))
            asked.append(w)
        for w in asked:
            self._hunger(w)
        return out

    # --- answers -------------------------------------------------------------------------

    def result(self, worker: str, kind: str, seq: int, data: bytes | list[bytes],
               now: float) -> Verdict:
        """``worker`` computed ``seq``; ACCEPT means: merge ``data`` now."""
        phase = self.phase
        if phase is None or phase.kind != kind:
            return Verdict.DUPLICATE  # a late answer from a phase that is over
        table = phase.table
        table.refresh(worker, now)
        digest = content_digest(data)
        try:
            verdict = table.vote(worker, seq, digest, now)
        except FragmentFailed as exc:
            raise JobFailed(
                message=f"{kind} {seq}: {exc.attempts} workers returned {exc.attempts} results "
                f"and no {self.redundancy} of them agreed", rule="redundancy") from None
        if self._expired and (worker, seq) in self._expired:
            self._expired.discard((worker, seq))
            if verdict is Verdict.DUPLICATE:
                self._note(f"worker {worker}'s late result for fragment {seq} was dropped: "
                           "another copy of it was merged")
        if verdict is Verdict.ACCEPT:
            self.accepted += 1
            for voter in table.agreed:
                self._counts[voter] = self._counts.get(voter, 0) + 1
            self.last_accepted = (digest, table.agreed)
            if self.trust is not None:
                self._judge(kind, seq)
        return verdict

    def adopt(self, worker: str, kind: str, seq: int, matches: Callable[[Any], bool],
              data: bytes | list[bytes] | None, now: float) -> tuple[Adoption, Verdict | None]:
        """Handover: ``worker`` ran fragment ``seq`` for the chief's run before a restart,
        and hands in its result ``data`` (None: it is still running it). ``matches`` says
        whether a payload of this run is the fragment it ran (a re-run splitter may not
        be deterministic). The result is that worker's vote, as if it had been leased
        the fragment now; a running fragment becomes its lease. Never merged twice."""
        w = self.workers.get(worker)
        if self.phase is None or self.phase.kind != kind or w is None:
            return Adoption.UNKNOWN, None
        table = self.phase.table
        if seq >= table.produced:
            return (Adoption.UNKNOWN if table.exhausted else Adoption.PENDING), None
        payload = table.payload(seq)
        if payload is None:
            return Adoption.DONE, None
        if not matches(payload):
            self._note(f"worker {worker} handed in a result for another fragment {seq} "
                       "than this run's; refused")
            return Adoption.MISMATCH, None
        if not table.adopt(worker, w.voter, seq, now):
            return Adoption.DONE, None
        if data is None:
            return Adoption.ADOPTED, None
        return Adoption.ADOPTED, self.result(worker, kind, seq, data, now)

    def _judge(self, kind: str, seq: int) -> None:
        """After an accepted result: agreeing voters earn trust, dissenters are caught."""
        trust = self.trust
        assert trust is not None
        table = self.table
        if table.quorum_of_last > 1:
            for voter in table.agreed:
                trust.agreed[voter] = trust.agreed.get(voter, 0) + 1
        else:
            (voter,) = table.agreed
            self._unchecked[voter] = self._unchecked.get(voter, 0) + 1
        for voter, wrong in table.dissent:
            # A failure that others did not see is no proof of cheating (a missing
            # module, a smaller machine): only a different result is.
            if wrong[:1] != b"!" and voter not in trust.banned:
                self._catch(voter, f"returned a wrong result for {kind} {seq} "
                            f"({len(table.agreed)} other node(s) agreed on another)")

    def _catch(self, voter: str, why: str) -> None:
        trust = self.trust
        assert trust is not None
        trust.banned[voter] = why
        trust.caught.append((voter, why))
        self._note(f"node {voter} {why}: it is quarantined and gets no more work")
        for worker in [w.id for w in self.workers.values() if w.voter == voter]:
            self.leave(worker)
        merged = self._unchecked.get(voter, 0)
        if merged:
            raise JobFailed(
                message=f"node {voter} {why}, and {merged} of its results in this job were "
                "merged without a check (it had earned trust), so these results cannot be "
                "trusted; the node is now quarantined: run the job again", rule="verify")

    def failure(self, worker: str, kind: str, seq: int, failure: WorkFailure,
                now: float) -> None:
        """``worker`` could not compute ``seq``. A deterministic failure (the job's code
        raised) is a vote: with enough agreeing votes the job fails. A crash is retried
        until ``max_attempts``."""
        phase = self.phase
        if phase is None or phase.kind != kind:
            return
        table = phase.table
        table.refresh(worker, now)
        where = f"{kind} {seq} on worker {worker}"
        if not failure.deterministic:
            if seq not in table.leased_to(worker):  # its lease ran out: no attempt lost
                self._note(f"{where} was lost ({failure.message}) after its lease ended")
                return
            self._note(f"{where} was lost ({failure.message}); it goes back to the queue")
            try:
                table.lost(worker, seq, attempt=True)
            except FragmentFailed as exc:
                raise JobFailed(message=f"fragment {exc.seq} failed {exc.attempts} times: "
                                f"{failure.message}", rule=failure.rule) from None
            return
        digest = failure.digest()
        phase.failures.setdefault(digest, failure)
        try:
            verdict = table.vote(worker, seq, digest, now)
        except FragmentFailed:
            verdict = Verdict.ACCEPT  # no agreement at all: report the failure we have
        if verdict is Verdict.ACCEPT:
            raise failure.error(f"{_CODE.get(kind, kind)} on fragment {seq}")
        if verdict is Verdict.WAIT:
            self._note(f"{where} failed ({failure.message}); checking it on another worker")

    def giveback(self, worker: str, kind: str, seq: int) -> None:
        """``worker`` hands ``seq`` back unrun: no attempt is counted."""
        if self.phase is not None and self.phase.kind == kind:
            self.table.lost(worker, seq, attempt=False)

    def tick(self, now: float) -> list[tuple[str, int]]:
        """End leases past their deadline; their fragments go to others."""
        if self.phase is None:
            return []
        ended = self.table.expire(now)
        for worker, seq in ended:
            self._expired.add((worker, seq))
            self._note(f"worker {worker} held fragment {seq} past its lease; it goes to others")
        return ended

    # --- what the job waits for ----------------------------------------------------------

    def waiting(self) -> str:
        """Why no work can go out although some is queued ("" when none is stuck)."""
        if self.phase is None or not self.table.queued:
            return ""
        voters = {w.voter for w in self.workers.values()}
        if not voters:
            return "no worker in reach"
        if len(voters) < self.redundancy:
            return (f"redundancy = {self.redundancy} needs {self.redundancy} distinct "
                    f"workers; {len(voters)} in reach")
        blocked = self.table.blocked(voters)
        if blocked is not None:
            return (f"fragment {blocked} needs a worker that has not run it yet "
                    f"(redundancy = {self.redundancy}); {len(voters)} in reach")
        return ""

    def counts(self) -> dict[str, int]:
        """Accepted results per voter (each voter of an agreeing quorum counts), over
        the whole job."""
        return dict(self._counts)

    def _note(self, line: str) -> None:
        if len(self.log) < MAX_LOG:
            self.log.append(line)

    def drain_log(self) -> list[str]:
        lines, self.log = self.log, []
        return lines


_CODE = {"process": "process()", "map": "mapfn", "reduce": "reducefn"}


def _seqs(seqs: list[int]) -> str:
    shown = ", ".join(map(str, seqs[:10]))
    return shown + (f" and {len(seqs) - 10} more" if len(seqs) > 10 else "")
