"""Handover: results that workers computed for a chief's run before it restarted.

A donor whose chief vanished keeps that job's work for a while (``octop2p.net._donor``).
When the chief is back, the donor hands in the results it holds and names the
fragments it is still running. The job machine adopts each one that is the fragment
this run has under that number and is not merged yet (:meth:`JobMachine.adopt`); this
desk keeps those whose fragment the re-run splitter has not produced yet, within
bounds, and counts what became of them for the chief's log.

Pure: no I/O, no clock and no trio, like the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from octop2p.engine._machine import Adoption, JobMachine
from octop2p.engine._scheduler import Verdict

#: Handed-in items kept until the splitter produces their fragment, at most (count and
#: bytes); more are dropped, and their fragments computed again.
MAX_PENDING = 1024
MAX_PENDING_BYTES = 64 << 20


@dataclass(frozen=True)
class HandedIn:
    """A result a worker computed for the chief's earlier run, or (``data`` None) a
    fragment it is still running."""

    worker: str
    kind: str
    seq: int
    #: Whether a payload of this run (as sent to workers) is the fragment it ran.
    matches: Callable[[Any], bool]
    data: bytes | list[bytes] | None = None

    @property
    def size(self) -> int:
        data = self.data
        if data is None:
            return 0
        return len(data) if isinstance(data, bytes) else sum(map(len, data))


class HandoverDesk:
    """Handed-in results of one job, and what became of them (see the module docstring)."""

    def __init__(self) -> None:
        self._pending: list[HandedIn] = []
        self._pending_bytes = 0
        self.counts: dict[str, int] = {}  # what happened -> how many
        self.merged = 0  # handed-in results accepted (not computed again)
        self._logged: dict[str, int] = {}

    def offer(self, machine: JobMachine, item: HandedIn, now: float,
              load: Callable[[Any], Any] | None = None) -> list[HandedIn]:
        """Adopt ``item`` if it may be; returns it if it is to be merged now."""
        outcome, verdict = machine.adopt(
            item.worker, item.kind, item.seq,
            lambda payload: item.matches(load(payload) if load else payload), item.data, now)
        if outcome is Adoption.PENDING:
            if (len(self._pending) >= MAX_PENDING
                    or self._pending_bytes + item.size > MAX_PENDING_BYTES):
                self._count("over bounds")
            else:
                self._pending.append(item)
                self._pending_bytes += item.size
            return []
        if outcome is Adoption.ADOPTED:
            self._count("result" if item.data is not None else "running")
        else:
            self._count(outcome.value)
        if verdict is not Verdict.ACCEPT:
            return []
        self.merged += 1
        return [item]

    @property
    def waiting(self) -> bool:
        """Some handed-in items wait for the splitter to produce their fragment."""
        return bool(self._pending)

    def retry(self, machine: JobMachine, now: float,
              load: Callable[[Any], Any] | None = None) -> list[HandedIn]:
        """After a split: offer again what waited for its fragment."""
        waiting, self._pending, self._pending_bytes = self._pending, [], 0
        return [accepted for item in waiting
                for accepted in self.offer(machine, item, now, load)]

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def news(self) -> str:
        """One line on what was handed in since it was last asked ("" when nothing)."""
        if self.counts == self._logged:
            return ""
        self._logged = dict(self.counts)
        c = self.counts
        line = (f"handover: adopted {c.get('result', 0)} results and {c.get('running', 0)} "
                "running fragments that workers handed in (computed for this job before "
                "the chief restarted or their link dropped)")
        dropped = {k: v for k, v in c.items() if k not in ("result", "running")}
        if dropped:
            line += "; dropped " + ", ".join(f"{v} {_WHY[k]}" for k, v in sorted(dropped.items()))
        return line


_WHY = {
    "done": "already merged",
    "mismatch": "for another fragment (refused)",
    "unknown": "for no fragment of this phase",
    "over bounds": "over the handover's bounds",
}
