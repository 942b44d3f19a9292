"""The chief's scheduling policy: which fragment goes to which worker, and when.

Pure: no I/O, no clock (times are handed in), no randomness. The chief's drivers, local
worker slots now and remote workers later, call it and act on what it returns.

- The splitter is pulled lazily: ``wanted()`` says how many fragments to fetch so that
  every worker's credits can be served plus a small prefetch, and no more.
- Workers take fragments by credits. A handed-out fragment holds a lease (worker,
  deadline) until its result arrives; a lost worker or an expired lease puts the
  fragment back at the front of the queue.
- With ``redundancy = N`` a fragment goes to N distinct workers and is accepted when N
  results agree (by digest); a disagreement sends it to one more worker.
- A fragment whose attempts run out fails the job instead of circling forever.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any


class Verdict(enum.Enum):
    """What the chief should do with a result."""

    ACCEPT = "accept"        # merge it: the fragment is done
    WAIT = "wait"            # redundancy: more agreeing results are needed
    DUPLICATE = "duplicate"  # the fragment is already done, or this lease is gone: drop it


@dataclass
class _Fragment:
    seq: int
    payload: Any
    attempts: int = 0  # failures counted against max_attempts
    leases: dict[str, float] = field(default_factory=dict)  # worker -> deadline
    tried: set[str] = field(default_factory=set)  # workers that already ran it
    digests: dict[bytes, int] = field(default_factory=dict)  # result digest -> votes
    first_result: Any = None


@dataclass(frozen=True)
class Assignment:
    """One fragment handed to one worker."""

    seq: int
    payload: Any


class FragmentFailed(Exception):
    """A fragment failed on every attempt allowed."""

    def __init__(self, seq: int, attempts: int) -> None:
        super().__init__(f"fragment {seq} failed {attempts} times")
        self.seq = seq
        self.attempts = attempts


class Scheduler:
    """Credits, leases, retries and redundancy for one job (see the module docstring)."""

    def __init__(
        self,
        *,
        prefetch: int = 16,
        max_attempts: int = 3,
        redundancy: int = 1,
        lease_seconds: float = 300.0,
    ) -> None:
        if redundancy < 1:
            raise ValueError("redundancy must be at least 1")
        self.prefetch = prefetch
        self.max_attempts = max_attempts
        self.redundancy = redundancy
        self.lease_seconds = lease_seconds
        self._next_seq = 0
        self._queue: deque[_Fragment] = deque()  # ready to hand out (front first)
        self._live: dict[int, _Fragment] = {}  # every fragment not yet accepted
        self._by_worker: dict[str, set[int]] = {}
        self._credits: dict[str, int] = {}  # outstanding credits per worker
        self.exhausted = False
        self.done = 0

    # --- the splitter side ---------------------------------------------------------------

    def wanted(self) -> int:
        """How many more fragments to pull from the splitter now."""
        if self.exhausted:
            return 0
        demand = sum(self._credits.values()) + self.prefetch
        queued = sum(self.redundancy - len(f.leases) for f in self._queue)
        return max(0, demand - queued)

    def add_fragments(self, payloads: list[Any]) -> list[int]:
        """Queue new fragments from the splitter; returns their sequence numbers."""
        seqs = []
        for payload in payloads:
            frag = _Fragment(self._next_seq, payload)
            self._next_seq += 1
            self._live[frag.seq] = frag
            self._queue.append(frag)
            seqs.append(frag.seq)
        return seqs

    def mark_exhausted(self) -> None:
        """The splitter has no more fragments: the total is now known."""
        self.exhausted = True

    @property
    def total(self) -> int | None:
        """Number of fragments in the job, once the splitter is exhausted."""
        return self._next_seq if self.exhausted else None

    @property
    def produced(self) -> int:
        """Fragments pulled from the splitter so far."""
        return self._next_seq

    @property
    def finished(self) -> bool:
        """Every fragment the splitter produced has been accepted."""
        return self.exhausted and not self._live

    # --- the worker side -----------------------------------------------------------------

    def offer_credits(self, worker: str, credits: int) -> bool:
        """A worker says it can take ``credits`` more fragments; True if that changed."""
        self._by_worker.setdefault(worker, set())
        changed = self._credits.get(worker) != credits
        self._credits[worker] = credits
        return changed

    def add_credits(self, worker: str, credits: int) -> None:
        """A remote worker has room for ``credits`` more fragments than it had."""
        self._by_worker.setdefault(worker, set())
        self._credits[worker] = self._credits.get(worker, 0) + credits

    def credits_of(self, worker: str) -> int:
        """Credits ``worker`` has outstanding (room it announced and has not been sent)."""
        return self._credits.get(worker, 0)

    def assign(self, worker: str, now: float) -> list[Assignment]:
        """Hand ``worker`` as many queued fragments as its credits allow."""
        credits = self._credits.get(worker, 0)
        out: list[Assignment] = []
        skipped: list[_Fragment] = []
        while credits and self._queue:
            frag = self._queue.popleft()
            if frag.seq not in self._live or worker in frag.tried:
                if frag.seq in self._live:
                    skipped.append(frag)  # redundancy: needs a different worker
                continue
            frag.leases[worker] = now + self.lease_seconds
            frag.tried.add(worker)
            self._by_worker.setdefault(worker, set()).add(frag.seq)
            credits -= 1
            out.append(Assignment(frag.seq, frag.payload))
            if len(frag.leases) < self._copies_needed(frag):
                self._queue.appendleft(frag)  # more copies of it still to hand out
        self._queue.extendleft(reversed(skipped))
        self._credits[worker] = credits
        return out

    def _requeue(self, frag: _Fragment) -> None:
        """Put a fragment back in the queue in sequence order.

        Requeued fragments are older than what the splitter queued since, and the merge
        waits for the oldest first. Keeping order also means that after a crash the
        fragment that was running comes first in the next batch, not after the ones that
        were handed back with it.
        """
        if frag in self._queue:
            return
        for i, queued in enumerate(self._queue):
            if queued.seq > frag.seq:
                self._queue.insert(i, frag)
                return
        self._queue.append(frag)

    def _copies_needed(self, frag: _Fragment) -> int:
        votes = max(frag.digests.values(), default=0)
        return self.redundancy - votes

    def complete(self, worker: str, seq: int, digest: bytes = b"", result: Any = None) -> Verdict:
        """A worker returned the result of ``seq`` (``digest`` identifies its content)."""
        frag = self._live.get(seq)
        if frag is None or worker not in frag.leases:
            return Verdict.DUPLICATE
        del frag.leases[worker]
        self._by_worker.get(worker, set()).discard(seq)
        if self.redundancy == 1:
            del self._live[seq]
            self.done += 1
            return Verdict.ACCEPT
        frag.digests[digest] = frag.digests.get(digest, 0) + 1
        if frag.first_result is None:
            frag.first_result = result
        if frag.digests[digest] >= self.redundancy:
            del self._live[seq]
            self.done += 1
            return Verdict.ACCEPT
        if not frag.leases and frag not in self._queue:
            # Results disagree (or a copy was lost): one more worker must break the tie.
            if len(frag.tried) >= self.redundancy + self.max_attempts:
                raise FragmentFailed(seq, len(frag.tried))
            self._requeue(frag)
        return Verdict.WAIT

    def fail(self, worker: str, seq: int) -> None:
        """The worker's attempt at ``seq`` failed (its child died, or the wall time ran out).

        Raises FragmentFailed once the fragment has failed ``max_attempts`` times.
        """
        frag = self._live.get(seq)
        if frag is None or worker not in frag.leases:
            return
        del frag.leases[worker]
        self._by_worker.get(worker, set()).discard(seq)
        frag.attempts += 1
        if frag.attempts >= self.max_attempts:
            raise FragmentFailed(seq, frag.attempts)
        if self.redundancy == 1:
            frag.tried.discard(worker)  # a fresh child on the same worker may retry it
        self._requeue(frag)

    def giveback(self, worker: str, seq: int) -> None:
        """The worker hands ``seq`` back unrun (its child was lost on another fragment)."""
        frag = self._live.get(seq)
        if frag is None or worker not in frag.leases:
            return
        del frag.leases[worker]
        self._by_worker.get(worker, set()).discard(seq)
        if self.redundancy == 1:
            frag.tried.discard(worker)
        self._requeue(frag)

    def release(self, worker: str) -> list[int]:
        """The worker is gone: its leases end and its fragments go back to the queue."""
        self._credits.pop(worker, None)
        seqs = sorted(self._by_worker.pop(worker, set()))
        for seq in reversed(seqs):
            frag = self._live.get(seq)
            if frag is None:
                continue
            frag.leases.pop(worker, None)
            if self.redundancy == 1:
                frag.tried.discard(worker)
            self._requeue(frag)
        return seqs

    def expire(self, now: float) -> list[tuple[str, int]]:
        """End every lease past its deadline; returns the (worker, seq) pairs ended."""
        ended = []
        for frag in list(self._live.values()):
            for worker, deadline in list(frag.leases.items()):
                if deadline <= now:
                    ended.append((worker, frag.seq))
        for worker, seq in ended:
            frag = self._live[seq]
            del frag.leases[worker]
            self._by_worker.get(worker, set()).discard(seq)
            self._requeue(frag)
        return ended

    def leased_to(self, worker: str) -> list[int]:
        """Sequence numbers currently leased to ``worker``."""
        return sorted(self._by_worker.get(worker, ()))

    @property
    def queued(self) -> int:
        """Fragments waiting for a worker."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Fragments pulled from the splitter and not yet accepted."""
        return len(self._live)
