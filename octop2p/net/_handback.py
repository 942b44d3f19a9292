"""What a donor keeps of one job's work while the job's chief is away.

A chief killed in mid-job and started again with the same home resumes the job from its
journal (docs/jobs.md, "When the chief restarts"). Its donors need not lose what they
were computing for it: when the link to a chief drops while a job holds fragments here,
the job's children finish them, their results are held (bounded), and the job waits
``handover_seconds`` for the chief. When the chief offers the same job again on a new
link, the donor hands in, in this order, the results it had sent in the last few seconds
(the chief may have died before writing them to its journal), the results it held, and
the fragments it still runs; then it asks for work as before. The chief's job machine
decides what counts: a result for a fragment already merged is dropped there.

This module is the bookkeeping; :class:`~octop2p.net._donor.WorkerJob` uses it.
"""

from __future__ import annotations

from collections import deque

from protocol import Message, Result

#: How long a donor keeps a job's work for a chief whose link dropped, by default
#: (``handover_seconds`` in config.toml).
HANDOVER_SECONDS = 120
#: Results sent this recently are handed in again: the chief writes its journal about
#: once a second, so a chief killed now has lost the last ones it received.
RECENT_SECONDS = 5.0
#: Results held while the chief is away, and results kept as recently sent, at most
#: (count per core, and bytes); past them the oldest go, and the chief computes them again.
MAX_KEPT_PER_CORE = 256
MAX_KEPT_BYTES = 64 << 20


def _size(result: Result) -> int:
    return len(result.envelope.payload) + len(result.out)


class Handback:
    """One job's results kept for a chief that may come back (see the module docstring)."""

    def __init__(self, cores: int) -> None:
        self.most = MAX_KEPT_PER_CORE * max(1, cores)
        self.away = False  # the chief's link dropped and no new one took it up yet
        self.granted = 0  # credits this job's slots asked for
        self.received = 0  # fragments that came for them
        self.dropped = 0  # results not kept (over the bounds)
        self._recent: deque[tuple[float, Result]] = deque()
        self._held: deque[Result] = deque()
        self._bytes = 0

    @property
    def owed(self) -> int:
        """Fragments the slots asked for and never got: what a new link must ask for."""
        return max(0, self.granted - self.received)

    @property
    def held(self) -> int:
        return len(self._held)

    def has_work(self) -> bool:
        return bool(self._held or self._recent)

    def sent(self, results: list[Result], now: float) -> None:
        """``results`` went to the chief: keep them a few seconds."""
        for result in results:
            self._recent.append((now, result))
            self._bytes += _size(result)
        self.forget(now)

    def forget(self, now: float) -> None:
        """Drop what was sent too long ago for a chief's journal to miss it."""
        while self._recent and (self._recent[0][0] < now - RECENT_SECONDS
                                or self._over()):
            self._bytes -= _size(self._recent.popleft()[1])

    def hold(self, results: list[Result]) -> None:
        """``results`` could not go to the chief: keep them for its return."""
        for result in results:
            self._held.append(result)
            self._bytes += _size(result)
        while self._over():  # what the chief may have had goes first
            kept = self._recent.popleft()[1] if self._recent else self._held.popleft()
            self._bytes -= _size(kept)
            self.dropped += 1

    def _over(self) -> bool:
        return (self._bytes > MAX_KEPT_BYTES
                or len(self._recent) + len(self._held) > self.most)

    def hand_in(self) -> list[Message]:
        """What a new link to the chief gets first (then this keeps nothing)."""
        out: list[Message] = [r for _, r in self._recent]
        out += self._held
        self._recent.clear()
        self._held.clear()
        self._bytes = 0
        return out
