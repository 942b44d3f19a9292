"""A donor protects itself: chiefs whose jobs keep breaking sandbox rules here are blocked.

Every failure of a chief's job on this node whose rule is a sandbox rule (files,
network, processes, threads, memory, seccomp, sandbox; see ``sandbox/_rules.py``) is a
breach; a job's own exceptions are not. Breaches are counted per job (one job that
fails many fragments the same way is one breach), within the last ``block_hours``.
When a chief reaches ``block_after_breaches`` of them, this node refuses its jobs for
``block_hours``, stops the ones it runs, and tells the chief why. The owner lifts a
block with ``octop2p blocked --unblock ID``. The record lives in the home
(``breaches.json``), so a restart forgets nothing. See docs/security.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octop2p._home import write_atomic

log = logging.getLogger(__name__)

BREACHES_FILE = "breaches.json"
#: The rules a job can break only by trying what the sandbox forbids.
BREACH_RULES = frozenset({"files", "network", "processes", "threads", "memory", "seccomp",
                          "sandbox"})
MAX_CHIEFS = 1024  # chiefs remembered; a swarm is a LAN, this is a bound, not a goal
MAX_BREACHES = 32  # breaches kept per chief
MAX_FILE = 4 << 20


@dataclass
class Breach:
    """One job of a chief that broke a sandbox rule here."""

    job: str
    name: str
    rule: str
    message: str
    time: float
    count: int = 1  # its failures that broke a rule


@dataclass
class ChiefRecord:
    """What this donor holds against one chief."""

    breaches: list[Breach] = field(default_factory=list)
    blocked_until: float = 0.0
    reason: str = ""


class ChiefGuard:
    """The breach record of every chief, and the blocks it led to (see the module doc)."""

    def __init__(self, path: Path | None, *, threshold: int = 3, hours: float = 24.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.threshold = threshold
        self.window = hours * 3600
        self.clock = clock
        self.chiefs: dict[str, ChiefRecord] = {}

    @classmethod
    def load(cls, path: Path | None, **kwargs: Any) -> ChiefGuard:
        """The record saved at ``path`` (an unreadable one is logged and started afresh)."""
        guard = cls(path, **kwargs)
        if path is None or not path.exists():
            return guard
        try:
            if path.stat().st_size > MAX_FILE:
                raise ValueError("too large")
            data = json.loads(path.read_text())
            for chief, entry in list(data["chiefs"].items())[:MAX_CHIEFS]:
                guard.chiefs[str(chief)] = ChiefRecord(
                    [Breach(**b) for b in entry["breaches"][-MAX_BREACHES:]],
                    float(entry["blocked_until"]), str(entry["reason"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read %s (%s): starting a new breach record", path, exc)
        return guard

    def to_json(self) -> dict[str, Any]:
        return {"chiefs": {chief: {"breaches": [vars(b) for b in rec.breaches],
                                   "blocked_until": rec.blocked_until, "reason": rec.reason}
                           for chief, rec in self.chiefs.items()}}

    def save(self) -> None:
        """Write the record to its file (blocking: call it off the event loop)."""
        if self.path is not None:
            write_atomic(self.path, json.dumps(self.to_json()).encode(), mode=0o600)

    def blocked(self, chief: str) -> str:
        """Why ``chief``'s jobs are refused now ("" when they are not)."""
        rec = self.chiefs.get(chief)
        if rec is None or rec.blocked_until <= self.clock():
            return ""
        return rec.reason

    def breach(self, chief: str, job: str, name: str, rule: str, message: str) -> bool:
        """Record a breach; True when it is new (the record changed in a way to save)."""
        now = self.clock()
        rec = self.chiefs.get(chief)
        if rec is None:
            if len(self.chiefs) >= MAX_CHIEFS:
                # Forget the chief whose last breach is oldest (never a blocked one first).
                oldest = min(self.chiefs, key=lambda c: (self.blocked(c) != "",
                                                         self._last(c)))
                del self.chiefs[oldest]
            rec = self.chiefs[chief] = ChiefRecord()
        for b in rec.breaches:
            if b.job == job:
                b.count += 1
                return False
        rec.breaches = [b for b in rec.breaches if now - b.time < self.window]
        rec.breaches.append(Breach(job, name[:128], rule[:64], message[:300], now))
        del rec.breaches[:-MAX_BREACHES]
        if self.threshold and len(rec.breaches) >= self.threshold and not self.blocked(chief):
            rec.blocked_until = now + self.window
            shown = "; ".join(f"job {b.name}: {b.rule} ({b.message})"
                              for b in rec.breaches[-self.threshold:])
            rec.reason = (
                f"this node blocks jobs of chief {chief} until "
                f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(rec.blocked_until))}: "
                f"{len(rec.breaches)} of its jobs broke sandbox rules here within "
                f"{self.window / 3600:g} h (block_after_breaches = {self.threshold}): "
                f"{shown}")[:4000]
            rec.breaches.clear()
        return True

    def _last(self, chief: str) -> float:
        breaches = self.chiefs[chief].breaches
        return breaches[-1].time if breaches else 0.0

    def unblock(self, chief: str) -> list[str]:
        """Lift the blocks of chiefs whose id starts with ``chief``; returns their ids."""
        prefix = chief.strip().upper()
        lifted = [c for c in self.chiefs if c.startswith(prefix) and self.blocked(c)]
        for c in lifted:
            self.chiefs[c] = ChiefRecord()
        return lifted

    def blocks(self) -> list[dict[str, Any]]:
        """Chiefs blocked now: id, until when, why."""
        return [{"chief": c, "until": rec.blocked_until, "reason": rec.reason}
                for c, rec in self.chiefs.items() if self.blocked(c)]


MAX_REFUSALS = 64  # donors whose refusal a job keeps


def note_refusal(node: Any, job: Any, link: Any, reason: str) -> None:
    """On a chief: a donor refused ``job``; its submitter sees why (``status``, events)."""
    record = job.record
    refused: dict[str, str] = record.refused
    if link.peer_id not in refused and len(refused) >= MAX_REFUSALS:
        return
    if refused.get(link.peer_id) != reason:  # not logged again at each later offer
        refused[link.peer_id] = reason
        log.warning("donor %s refused job %s (%s): %s", link.short, record.name,
                    record.id_hex[:12], reason)
    # An event at each refusal (one per donor per heartbeat at most): a submitter that
    # starts following the job late still hears of it.
    node.emit("refused", job=record.id_hex, donor=link.peer_id, reason=reason)
