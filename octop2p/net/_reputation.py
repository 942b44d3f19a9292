"""What this node, as a chief, has learnt of its workers' honesty; kept in its home.

Per worker node: how many of its results were verified by another node's agreeing
result, and whether it was caught returning a wrong one (quarantined, with the reason).
A job's :class:`~octop2p.engine._machine.Trust` starts from it and is folded back in as
the job runs. The owner lifts a quarantine with ``octop2p peers --forgive ID``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from octop2p.engine._machine import Trust

log = logging.getLogger(__name__)

#: Nodes remembered at most (any member can make new identities): the least recently
#: seen go first, quarantined ones last.
MAX_NODES = 10_000
#: Verified agreements after which a node runs single copies under adaptive replication.
TRUST_AFTER = 10


class Reputation:
    """Agreements and quarantines per worker node (see the module docstring)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.nodes: dict[str, dict[str, Any]] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            nodes = data["nodes"]
            if not isinstance(nodes, dict):
                raise TypeError("nodes is not a table")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("reputation file %s is damaged (%s); starting afresh", path, exc)
            return
        for node, entry in list(nodes.items())[:MAX_NODES]:
            if isinstance(node, str) and isinstance(entry, dict):
                agreed = entry.get("agreed")
                reason = entry.get("quarantined")
                self.nodes[node] = {
                    "agreed": agreed if isinstance(agreed, int) and agreed >= 0 else 0,
                    "quarantined": reason if isinstance(reason, str) else None,
                    "seen": float(entry.get("seen") or 0.0),
                }

    def save(self) -> None:
        """Write the file atomically (call it off the event loop)."""
        if self.path is None:
            return
        tmp = self.path.with_name(self.path.name + ".part")
        with open(tmp, "w") as f:
            json.dump({"nodes": self.nodes}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def quarantined(self, node: str) -> str | None:
        """Why ``node`` is quarantined, or None."""
        entry = self.nodes.get(node)
        return entry["quarantined"] if entry else None

    def trust(self, *, own: str, verify: str, spot_share: float, salt: bytes) -> Trust:
        """A job's view: what is known now, with this node's own cores trusted."""
        return Trust(
            verify=verify, trust_after=TRUST_AFTER, spot_share=spot_share, salt=salt,
            agreed={n: e["agreed"] for n, e in self.nodes.items() if e["agreed"]},
            trusted={own},
            banned={n: e["quarantined"] for n, e in self.nodes.items() if e["quarantined"]},
        )

    def absorb(self, trust: Trust, before: dict[str, int]) -> list[tuple[str, str]]:
        """Fold a job's trust back in (``before``: its agreements when it started);
        returns the nodes newly caught, with why."""
        now = time.time()
        for node, count in trust.agreed.items():
            gained = count - before.get(node, 0)
            if gained > 0:
                entry = self._entry(node)
                entry["agreed"] += gained
                entry["seen"] = now
        caught, trust.caught = trust.caught, []
        for node, why in caught:
            entry = self._entry(node)
            entry["quarantined"], entry["seen"] = why, now
        self._prune()
        return caught

    def forgive(self, node: str) -> bool:
        """Lift ``node``'s quarantine (its earned trust starts over); False if none."""
        entry = self.nodes.get(node)
        if entry is None or not entry["quarantined"]:
            return False
        entry["quarantined"], entry["agreed"] = None, 0
        return True

    def _entry(self, node: str) -> dict[str, Any]:
        return self.nodes.setdefault(node, {"agreed": 0, "quarantined": None, "seen": 0.0})

    def _prune(self) -> None:
        if len(self.nodes) <= MAX_NODES:
            return
        order = sorted(self.nodes, key=lambda n: (bool(self.nodes[n]["quarantined"]),
                                                  self.nodes[n]["seen"]))
        for node in order[: len(self.nodes) - MAX_NODES]:
            del self.nodes[node]
