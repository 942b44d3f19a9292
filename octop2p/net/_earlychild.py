"""A donor's head start: the job's work children start as soon as its package is here.

On a donor the first child used to start when the first fragment arrived, so its fork
and its import of the job's code (tens of milliseconds, more for a script that loads
data) came after the chief's round trip. :class:`EarlyMaker` starts one child per slot
right after the package is fetched; each slot's first ``spawn`` takes one of them (its
failure, if loading failed, is raised there, as if it had just happened), later ones
are started as before. Children never taken are closed when the job ends.
"""

from __future__ import annotations

from typing import Any

import trio

from octop2p.engine._children import Child
from octop2p.engine._slot import ChildMaker, SpawnFailed


class _Early:
    """One child started ahead of its slot, or why it could not start."""

    def __init__(self) -> None:
        self.ready = trio.Event()
        self.child: Child | None = None
        self.failed: SpawnFailed | None = None
        self.printed: list[tuple[str, Any]] = []  # what it printed as it loaded


class EarlyMaker(ChildMaker):
    """A :class:`ChildMaker` whose first children start before anyone asks for them."""

    _early: list[_Early]

    def start_early(self, nursery: trio.Nursery, count: int) -> None:
        """Start ``count`` children now, in ``nursery``, for the first ``spawn`` calls."""
        self._early = [_Early() for _ in range(count)]
        for early in self._early:
            nursery.start_soon(self._start_one, early)

    async def _start_one(self, early: _Early) -> None:
        try:
            early.child = await ChildMaker.spawn(self, lambda *out: early.printed.append(out))
        except SpawnFailed as exc:
            early.failed = exc
        finally:
            early.ready.set()

    async def spawn(self, on_printed: Any = None) -> Child:
        early_ones = getattr(self, "_early", None)
        if not early_ones:
            return await super().spawn(on_printed)
        early = early_ones.pop(0)
        await early.ready.wait()
        if early.failed is not None:
            raise early.failed
        assert early.child is not None
        if on_printed is not None:
            for role, text in early.printed:
                on_printed(role, text)
        return early.child

    async def aclose(self) -> None:
        """Close the early children no slot took (the job ended first)."""
        with trio.CancelScope(shield=True):
            for early in getattr(self, "_early", ()):
                if early.child is not None:
                    await early.child.aclose()
            self._early = []
