"""The fragment table of one phase: which fragment is queued, leased, voted on or done.

Pure: no I/O, no clock (times are handed in), no randomness. The job machine
(:mod:`._machine`) owns one table per phase and is its only caller.

- A handed-out fragment holds a lease (worker, deadline) until that worker answers. A
  lost worker, a crashed attempt or an expired lease puts the fragment back in the queue
  in sequence order, and the worker may take it again later (a fresh child, or the same
  worker once it catches up). A late answer from a worker whose lease ended still counts
  while the fragment is open: the first valid result wins, and none is merged twice.
- Workers vote with a digest of their result's content. Each *voter* (a node, or a local
  slot in ``octop2p run``) votes once per fragment, so with ``redundancy = N`` a result
  is accepted once N distinct voters agree; a disagreement sends the fragment to one more.
- A fragment whose attempts or votes run out raises :class:`FragmentFailed`.
- Backup tasks: once nothing is queued, an idle worker takes a second copy of a fragment
  whose copy is *late*: out for longer than BACKUP_FACTOR times the phase's median time
  from lease to answer, and at least BACKUP_FLOOR_SECONDS. The first answer wins.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

#: A copy is late once it has been out this many times the phase's median answer time.
#: A fragment's time from lease to answer counts its wait in the worker's window (up to
#: a batch queued ahead of it), so an ordinary copy takes up to about twice the median;
#: one out for longer is stuck, or on a worker much slower than the rest.
BACKUP_FACTOR = 2.0
#: ... and never sooner than this: below it, scheduling jitter on a busy machine is as
#: long as the work, and a second copy would only queue behind the first.
BACKUP_FLOOR_SECONDS = 0.2
#: The median is taken over the phase's last so many answers.
ANSWER_SAMPLES = 64


class Verdict(enum.Enum):
    """What to do with a result."""

    ACCEPT = "accept"  # merge it: the fragment is done
    WAIT = "wait"  # redundancy: more agreeing results are needed
    DUPLICATE = "duplicate"  # the fragment is done, or this worker never held it: drop it


@dataclass
class _Fragment:
    seq: int
    payload: Any
    attempts: int = 0  # lost attempts (crash, wall time), counted against max_attempts
    leases: dict[str, float] = field(default_factory=dict)  # worker -> deadline
    holders: dict[str, str] = field(default_factory=dict)  # worker -> voter, ever leased
    voted: set[str] = field(default_factory=set)  # voters that answered
    votes: dict[bytes, set[str]] = field(default_factory=dict)  # digest -> voters
    quorum: int = 0  # agreeing voters it needs; 0: the table's redundancy
    backup: str = ""  # the worker running a backup copy of it, if any

    def busy_voters(self) -> set[str]:
        """Voters that hold a copy now or already answered: none may take another."""
        return self.voted | {self.holders[w] for w in self.leases}

    def best(self) -> int:
        return max((len(v) for v in self.votes.values()), default=0)


class Assignment(NamedTuple):
    """One fragment handed to one worker (a tuple: one is made per fragment sent)."""

    seq: int
    payload: Any


class FragmentFailed(Exception):
    """A fragment failed on every attempt allowed, or its results never agreed."""

    def __init__(self, seq: int, attempts: int, why: str = "failed") -> None:
        super().__init__(f"fragment {seq} {why} {attempts} times")
        self.seq = seq
        self.attempts = attempts
        self.why = why


class FragmentTable:
    """Leases, votes and retries of one phase (see the module docstring)."""

    def __init__(self, *, redundancy: int = 1, max_attempts: int = 3,
                 lease_seconds: float = 300.0) -> None:
        if redundancy < 1:
            raise ValueError("redundancy must be at least 1")
        self.redundancy = redundancy
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self._next_seq = 0
        self._queue: deque[_Fragment] = deque()  # needing a copy handed out (front first)
        self._live: dict[int, _Fragment] = {}  # every fragment not yet accepted
        self._by_worker: dict[str, set[int]] = {}  # worker -> seqs it holds a lease on
        self._seen: dict[str, float] = {}  # worker -> its last sign of progress
        self.exhausted = False
        self.done = 0
        self.agreed: list[str] = []  # the voters behind the last accepted result
        self.dissent: list[tuple[str, bytes]] = []  # (voter, digest) that answered otherwise
        self.quorum_of_last = 1  # the quorum the last accepted result had
        #: Decides a fragment's quorum when its first copy goes out (adaptive
        #: replication: 1 for a trusted voter, more for a new one or a spot check).
        self.quorum_for: Callable[[str, int], int] | None = None
        #: Backup tasks: once nothing is queued, an idle worker takes a second copy of
        #: the oldest late fragment still out (on another voter); the first answer wins.
        self.backup_tasks = True
        self.backups = 0
        self.backups_won = 0
        self._answers: deque[float] = deque(maxlen=ANSWER_SAMPLES)  # lease to answer, s
        self._median: float | None = None  # of _answers; None: to be worked out again
        self._settled: set[int] = set()  # accepted in an earlier run of the chief

    # --- fragments -----------------------------------------------------------------------

    def settle(self, seqs: set[int]) -> None:
        """Resume: these fragments were accepted before the chief restarted. When they
        are added again (a re-run splitter), they count as done and are never queued."""
        self._settled = set(seqs)

    def add(self, payloads: list[Any]) -> None:
        """Queue new fragments, numbered from where the last ones stopped."""
        for payload in payloads:
            frag = _Fragment(self._next_seq, payload)
            self._next_seq += 1
            if self._settled and frag.seq in self._settled:
                self._settled.discard(frag.seq)
                self.done += 1
                continue
            self._live[frag.seq] = frag
            self._queue.append(frag)

    def mark_exhausted(self) -> None:
        """No more fragments will come: the total is known."""
        self.exhausted = True

    @property
    def total(self) -> int | None:
        return self._next_seq if self.exhausted else None

    @property
    def produced(self) -> int:
        return self._next_seq

    @property
    def finished(self) -> bool:
        """Every fragment is accepted."""
        return self.exhausted and not self._live

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Fragments added and not yet accepted."""
        return len(self._live)

    def copies_queued(self) -> int:
        """Copies still to hand out of the queued fragments."""
        # Asked after every dispatch round, over a queue of hundreds: a fragment that is
        # neither voted on nor leased needs its quorum (the common case, kept cheap).
        n = 0
        redundancy = self.redundancy
        for f in self._queue:
            if f.votes or f.leases:
                n += self._needed(f) - len(f.leases)
            else:
                n += f.quorum or redundancy
        return n

    def _quorum(self, frag: _Fragment) -> int:
        return frag.quorum or self.redundancy

    def _needed(self, frag: _Fragment) -> int:
        quorum = frag.quorum or self.redundancy
        return quorum - frag.best() if frag.votes else quorum

    def blocked(self, voters: set[str]) -> int | None:
        """The first queued fragment that none of ``voters`` may take, if any."""
        for frag in self._queue:
            # (A fragment nobody holds or answered is busy for no voter: skipped cheaply.)
            if (frag.voted or frag.leases or not voters) and voters <= frag.busy_voters():
                return frag.seq
        return None

    # --- leases --------------------------------------------------------------------------

    def take(self, worker: str, voter: str, n: int, now: float) -> list[Assignment]:
        """Hand ``worker`` up to ``n`` queued fragments that its voter does not hold."""
        out: list[Assignment] = []
        skipped: list[_Fragment] = []
        while n and self._queue:
            frag = self._queue.popleft()
            if frag.seq not in self._live:
                continue
            if not frag.holders and self.quorum_for is not None:
                frag.quorum = self.quorum_for(voter, frag.seq)
            if self._quorum(frag) > 1 and voter in frag.busy_voters():
                skipped.append(frag)  # redundancy: needs a different voter
                continue
            frag.leases[worker] = now + self.lease_seconds
            frag.holders[worker] = voter
            self._by_worker.setdefault(worker, set()).add(frag.seq)
            n -= 1
            out.append(Assignment(frag.seq, frag.payload))
            if len(frag.leases) < self._needed(frag):
                self._queue.appendleft(frag)  # more copies of it still to hand out
        self._queue.extendleft(reversed(skipped))
        if n and not self._queue and self.exhausted and self.backup_tasks:
            out += self._backups(worker, voter, n, now)
        return out

    def _backups(self, worker: str, voter: str, n: int, now: float) -> list[Assignment]:
        """Second copies of the oldest late fragments still out, for an idle worker."""
        out: list[Assignment] = []
        late = now - self.backup_after()
        for frag in self._live.values():  # in sequence order: the oldest first
            if len(out) == n:
                break
            if (frag.backup or not frag.leases or self._leased_at(frag) > late
                    or voter in frag.busy_voters()):
                continue
            frag.backup = worker
            frag.leases[worker] = now + self.lease_seconds
            frag.holders[worker] = voter
            self._by_worker.setdefault(worker, set()).add(frag.seq)
            self.backups += 1
            out.append(Assignment(frag.seq, frag.payload))
        return out

    def _leased_at(self, frag: _Fragment) -> float:
        """When the oldest copy of ``frag`` still out was handed out."""
        return min(frag.leases.values()) - self.lease_seconds

    def backup_after(self) -> float:
        """How long a copy may be out before an idle worker backs it up (see
        BACKUP_FACTOR); the floor alone until the phase has an answer."""
        if self._median is None and self._answers:
            ordered = sorted(self._answers)
            self._median = ordered[len(ordered) // 2]
        return max(BACKUP_FLOOR_SECONDS, BACKUP_FACTOR * (self._median or 0.0))

    def backup_due(self, now: float) -> float:
        """When the next copy out becomes late, if after ``now`` (inf: none will). One
        already late waits for a worker with credits, which wakes the dispatcher anyway."""
        if self._queue or not self.exhausted or not self.backup_tasks:
            return math.inf
        after = self.backup_after()
        return min((due for frag in self._live.values() if frag.leases and not frag.backup
                    if (due := self._leased_at(frag) + after) > now), default=math.inf)

    def _end_lease(self, frag: _Fragment, worker: str) -> None:
        frag.leases.pop(worker, None)
        held = self._by_worker.get(worker)
        if held is not None:
            held.discard(frag.seq)

    def _requeue(self, frag: _Fragment) -> None:
        """Back in the queue in sequence order (the merge waits for the oldest first)."""
        if frag in self._queue or len(frag.leases) >= self._needed(frag):
            return
        for i, queued in enumerate(self._queue):
            if queued.seq > frag.seq:
                self._queue.insert(i, frag)
                return
        self._queue.append(frag)

    def refresh(self, worker: str, now: float) -> None:
        """``worker`` is making progress: its leases run from now again (kept once per
        worker, not per lease: this runs for every answer)."""
        self._seen[worker] = now

    def lost(self, worker: str, seq: int, *, attempt: bool) -> None:
        """``worker``'s copy of ``seq`` is lost; ``attempt``: it ran (crash, wall time) and
        counts against max_attempts, else it was handed back unrun."""
        frag = self._live.get(seq)
        if frag is None or worker not in frag.leases:
            return
        self._end_lease(frag, worker)
        if attempt:
            frag.attempts += 1
            if frag.attempts >= self.max_attempts:
                raise FragmentFailed(seq, frag.attempts)
        self._requeue(frag)

    def release(self, worker: str) -> list[int]:
        """``worker`` is gone: its leases end and its fragments go back to the queue."""
        seqs = sorted(self._by_worker.pop(worker, set()))
        for seq in seqs:
            frag = self._live.get(seq)
            if frag is not None:
                frag.leases.pop(worker, None)
                self._requeue(frag)
        return seqs

    def expire(self, now: float) -> list[tuple[str, int]]:
        """End every lease past its deadline; returns the (worker, seq) pairs ended."""
        ended = []
        for worker, seqs in self._by_worker.items():
            renewed = self._seen.get(worker, 0.0) + self.lease_seconds
            for seq in seqs:
                if max(self._live[seq].leases.get(worker, now + 1), renewed) <= now:
                    ended.append((worker, seq))
        for worker, seq in ended:
            frag = self._live[seq]
            self._end_lease(frag, worker)
            self._requeue(frag)
        return ended

    def leased_to(self, worker: str) -> list[int]:
        return sorted(self._by_worker.get(worker, ()))

    def is_open(self, seq: int) -> bool:
        """Fragment ``seq`` is added and not accepted: a copy of it may still count."""
        return seq in self._live

    def payload(self, seq: int) -> Any:
        """Fragment ``seq``'s payload while it is open; None once it is accepted (or
        settled before the chief restarted) or not added yet."""
        frag = self._live.get(seq)
        return None if frag is None else frag.payload

    def adopt(self, worker: str, voter: str, seq: int, now: float) -> bool:
        """Handover: ``worker`` ran the open fragment ``seq`` for an earlier run of the
        chief. It holds it as if leased now, unless its voter already holds a copy
        through another worker or voted on it (False: its answer would not count)."""
        frag = self._live.get(seq)
        if frag is None:
            return False
        if worker in frag.leases:
            return True
        if voter in frag.busy_voters():
            return False
        if not frag.holders and self.quorum_for is not None:
            frag.quorum = self.quorum_for(voter, seq)
        frag.leases[worker] = now + self.lease_seconds
        frag.holders[worker] = voter
        self._by_worker.setdefault(worker, set()).add(seq)
        if frag in self._queue and len(frag.leases) >= self._needed(frag):
            self._queue.remove(frag)  # no other worker is to take it now
        return True

    # --- votes ---------------------------------------------------------------------------

    def vote(self, worker: str, seq: int, digest: bytes, now: float | None = None) -> Verdict:
        """``worker`` answered ``seq`` with a result whose content hashes to ``digest``
        (at ``now``: how long it took counts towards when backups start)."""
        frag = self._live.get(seq)
        voter = frag.holders.get(worker) if frag is not None else None
        if frag is None or voter is None or voter in frag.voted:
            return Verdict.DUPLICATE
        deadline = frag.leases.get(worker)
        # (A result handed in from the chief's earlier run is adopted and answered in
        # one go: it took no time here, and is no sample.)
        if now is not None and deadline is not None and now > deadline - self.lease_seconds:
            self._answers.append(now - (deadline - self.lease_seconds))
            self._median = None
        self._end_lease(frag, worker)
        frag.voted.add(voter)
        agreeing = frag.votes.setdefault(digest, set())
        agreeing.add(voter)
        quorum = self._quorum(frag)
        if len(agreeing) >= quorum:
            if frag.backup == worker:
                self.backups_won += 1
            self.agreed = sorted(agreeing) if len(agreeing) > 1 else [voter]
            self.dissent = sorted((v, d) for d, vs in frag.votes.items() if d != digest
                                  for v in vs) if len(frag.votes) > 1 else []
            self.quorum_of_last = quorum
            del self._live[seq]
            for other in list(frag.leases) if frag.leases else ():
                self._end_lease(frag, other)  # their answers will be duplicates
            self.done += 1
            return Verdict.ACCEPT
        if len(frag.voted) >= quorum + self.max_attempts:
            raise FragmentFailed(seq, len(frag.voted), "got disagreeing results")
        self._requeue(frag)
        return Verdict.WAIT
