"""What a running job tells those who watch it: its progress, and a wake-up for every
change (the runner's phase loops and the node's progress events wait on it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio


@dataclass
class Progress:
    """A snapshot of one job's progress, for progress bars and the node API."""

    phase: str
    done: int = 0
    total: int | None = None
    workers: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    waiting: str = ""  # why no work goes out, when none can


OutputSink = Callable[[str, str], None]  # (where, text)


class Changed:
    """Wakes every task waiting for the job's state to change."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()
