"""Backup tasks through the runner: a fragment held by a worker that never answers is
run again by an idle one as soon as it is late, without waiting for the runner's tick
or the lease."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from octop2p.engine import _runner
from octop2p.engine._children import open_fork_server
from octop2p.engine._groups import collapse_groups
from octop2p.engine._local import LocalPort, prepare, usable_layers
from octop2p.engine._runner import JobRunner
from octop2p.engine._scheduler import BACKUP_FLOOR_SECONDS
from octop2p.engine._slot import Work

SPLIT = "def splitter():\n    yield 6\n"
PROCESS = "def process(x):\n    return x * 7\n"
MERGE = """
def merger(result, results_dir):
    (results_dir / "out.txt").write_text(str(result))

def finalize(results_dir):
    pass
"""


class FrozenPort:
    """A worker that takes fragments and never answers (a donor frozen by SIGSTOP, its
    link still up)."""

    def __init__(self) -> None:
        self.got: list[tuple[int, float]] = []

    async def serve(self, runner: JobRunner, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runner.join("frozen", "frozen", 4, self)
        runner.credit("frozen", 4)
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            runner.leave("frozen")

    def deliver(self, worker: str, works: list[Work]) -> None:
        self.got += [(w.seq, time.monotonic()) for w in works]


async def test_a_frozen_workers_fragment_is_backed_up_once_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither the tick nor the lease (2 * wall_seconds + 10 s) may be what rescues it.
    monkeypatch.setattr(_runner, "TICK_SECONDS", 600.0)
    job = tmp_path / "job"
    job.mkdir()
    (job / "Split.py").write_text(SPLIT)
    (job / "Process.py").write_text(PROCESS)
    (job / "Merge.py").write_text(MERGE)
    spec = prepare(job)
    frozen = FrozenPort()
    with collapse_groups(), trio.fail_after(30):
        async with open_fork_server() as fs:
            runner = JobRunner(spec, fs, work_dir=tmp_path / "work", layers=usable_layers())
            runner.served += [frozen, LocalPort(1, lambda i: f"slot-{i}")]
            results = await runner.run()
    done = time.monotonic()
    assert [seq for seq, _ in frozen.got] == [0]  # the only fragment went to it first
    assert (results / "out.txt").read_text() == "42"  # and was computed by the slot
    assert runner.machine.counts() == {"slot-0": 1}
    # Backed up once late (the floor: no fragment of the phase had answered), not
    # before: well within a second here, far sooner than a tick or a lease.
    assert BACKUP_FLOOR_SECONDS <= done - frozen.got[0][1] < 10
