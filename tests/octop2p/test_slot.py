"""One worker slot (``drive_slot``) with a real sandboxed work child: what it sends the
child, what it answers, and the credits it gives back."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import trio

from octop2p.engine._children import open_fork_server
from octop2p.engine._limits import Limits
from octop2p.engine._local import usable_layers
from octop2p.engine._machine import WorkFailure
from octop2p.engine._slot import ChildMaker, Done, Pacer, Work, child_spec, drive_slot

# A fragment the child must never get: running it kills the child (the sink would see
# a failure).
PROCESS = """
import os
def process(x):
    if x == "poison":
        os._exit(7)
    return x.upper()
"""


class RecordingSink:
    """Answers of a slot, as a runner would take them; ``settle`` marks fragments whose
    result was accepted elsewhere (another copy won)."""

    flush_seconds = 0.0

    def __init__(self) -> None:
        self.done: list[tuple[int, Any]] = []
        self.failures: list[tuple[int, WorkFailure]] = []
        self.returned: list[int] = []
        self.credit: list[int] = []
        self.settled: set[int] = set()
        self.settle_after: dict[int, int] = {}  # once seq K is answered, V is settled

    async def results(self, done: list[Done]) -> None:
        for d in done:
            self.done.append((d.seq, pickle.loads(d.payload)))
            if d.seq in self.settle_after:
                self.settled.add(self.settle_after[d.seq])

    async def failed(self, work: Work, failure: WorkFailure) -> None:
        self.failures.append((work.seq, failure))

    async def gave_back(self, works: list[Work]) -> None:
        self.returned += [w.seq for w in works]

    async def credits(self, n: int) -> None:
        self.credit.append(n)

    def printed(self, where: str, text: str) -> None:
        pass

    def wants(self, work: Work) -> bool:
        return work.seq not in self.settled


class RecordingMaker(ChildMaker):
    """Starts real children, and notes every request the slot sends them."""

    sent: list[list[Any]]

    async def spawn(self, on_printed: Any = None) -> Any:
        child = await super().spawn(on_printed)
        real = child.send

        async def send(message: list[Any]) -> None:
            self.sent.append(message)
            await real(message)

        child.send = send  # type: ignore[method-assign]
        return child


async def test_work_settled_while_queued_never_reaches_the_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches of two: the slot aims at two batches in flight, four credits.
    monkeypatch.setattr(Pacer, "size", lambda self, fair_share=None: 2)
    (tmp_path / "Process.py").write_text(PROCESS)
    limits = Limits()
    spec = child_spec("work", kind="package", job_dir=tmp_path, script=None,
                      results_dir=None, limits=limits, options={"partitions": 2},
                      layers=usable_layers())
    sink = RecordingSink()
    sink.settled.add(5)  # settled before the slot ever looked at it
    sink.settle_after[0] = 1  # a backup of 1 queued here; its original wins meanwhile
    works = [Work("process", seq, pickle.dumps(x))
             for seq, x in ((5, "poison"), (0, "a"), (1, "poison"), (2, "b"))]
    send, inbox = trio.open_memory_channel[Work](10)
    for work in works:
        send.send_nowait(work)
    send.close()  # the slot stops once its inbox is empty
    with trio.fail_after(30):
        async with open_fork_server() as fs:
            maker = RecordingMaker(fs, spec, limits, None)
            maker.sent = []
            await drive_slot(maker, inbox, sink, partitions=2)
    assert sink.done == [(0, "A"), (2, "B")]
    assert sink.failures == [] and sink.returned == []
    sent = [[seq for seq, _ in request[1]] for request in maker.sent]
    assert sent == [[0], [2]]  # batches [5, 0] and [1, 2], less what was settled
    # Every fragment taken from the inbox gave its credit back, run or dropped: what the
    # slot granted, less what it was sent, is its window of two batches.
    assert sum(sink.credit) - len(works) == 2 * 2
