"""The node's own cores as workers, and ``octop2p run``: one job on this machine only."""

from __future__ import annotations

import logging
import math
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from octop2p.engine._children import ForkServer, open_fork_server
from octop2p.engine._forkstart import StartedServer
from octop2p.engine._groups import collapse_groups
from octop2p.engine._headstart import local_partitions, local_workers
from octop2p.engine._headstart import usable_layers as usable_layers
from octop2p.engine._machine import WorkFailure
from octop2p.engine._manifest import Provenance, package_hash_of
from octop2p.engine._package import JobSpec
from octop2p.engine._package import prepare as prepare
from octop2p.engine._results import check_out, default_out, deliver
from octop2p.engine._runner import JobRunner, OutputSink, Progress
from octop2p.engine._slot import MAX_SLOT_WINDOW, Done, Work, drive_slot
from octop2p.errors import JobFailed

if TYPE_CHECKING:
    from protocol import NodeIdentity

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """What a finished local run produced."""

    job_id: str
    name: str
    out: Path
    fragments: int
    seconds: float
    workers: dict[str, int]


class _LocalSink:
    """A local slot's answers go straight to the runner."""

    flush_seconds = 0.0

    def __init__(self, runner: JobRunner, worker: str) -> None:
        self.runner = runner
        self.worker = worker

    async def results(self, done: list[Done]) -> None:
        self.runner.results(self.worker, done)

    async def failed(self, work: Work, failure: WorkFailure) -> None:
        self.runner.failed(self.worker, work, failure)

    async def gave_back(self, works: list[Work]) -> None:
        if works:
            self.runner.gave_back(self.worker, works)

    async def credits(self, n: int) -> None:
        self.runner.credit(self.worker, n)

    def printed(self, where: str, text: str) -> None:
        self.runner.on_output(where, text)

    def wants(self, work: Work) -> bool:
        return self.runner.machine.is_open(work.kind, work.seq)


class LocalPort:
    """``slots`` sandboxed work children on this node, each a worker of the job.

    ``voter`` names whose results each slot's count as: its own in ``octop2p run`` (the
    slots are all the workers there are), the node's on a chief, where redundancy asks
    for distinct machines."""

    def __init__(self, slots: int, voter: Callable[[int], str]) -> None:
        self.slots = slots
        self.voter = voter
        self._inboxes: dict[str, trio.MemorySendChannel[Work]] = {}

    async def serve(self, runner: JobRunner, *,
                    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        maker = runner.maker("work")
        try:
            async with trio.open_nursery() as nursery:
                for i in range(self.slots):
                    worker = f"local-{i}"
                    # Never fuller than the slot's credits: deliveries do not block.
                    send, receive = trio.open_memory_channel[Work](math.inf)
                    self._inboxes[worker] = send
                    runner.join(worker, self.voter(i), MAX_SLOT_WINDOW, self)
                    nursery.start_soon(self._slot, runner, maker, worker, receive)
                task_status.started()
        finally:
            for worker in self._inboxes:
                runner.leave(worker)

    async def _slot(self, runner: JobRunner, maker: object, worker: str,
                    inbox: trio.MemoryReceiveChannel[Work]) -> None:
        await drive_slot(maker, inbox, _LocalSink(runner, worker),  # type: ignore[arg-type]
                         partitions=runner.partitions)

    def deliver(self, worker: str, works: list[Work]) -> None:
        inbox = self._inboxes[worker]
        for work in works:
            inbox.send_nowait(work)


def _new_identity() -> NodeIdentity:
    from protocol import NodeIdentity

    return NodeIdentity.generate()


def local_runner(spec: JobSpec, fs: ForkServer, *, workers: int, work_dir: Path,
                 layers: frozenset[str], on_progress: Callable[[Progress], None] | None = None,
                 on_output: OutputSink | None = None) -> JobRunner:
    """A runner for ``spec`` whose workers are ``workers`` slots on this machine, each
    voting for itself (``octop2p run``)."""
    redundancy = spec.options.redundancy
    if redundancy > workers:
        raise JobFailed(
            message=f"redundancy = {redundancy} needs at least that many workers, and this "
            f"run has {workers} (give -w {redundancy})", rule="redundancy")
    runner = JobRunner(spec, fs, work_dir=work_dir, layers=layers,
                       partitions=local_partitions(spec, workers), on_progress=on_progress,
                       on_output=on_output)
    runner.served.append(LocalPort(workers, lambda i: f"local-{i}"))
    return runner


async def run_local(
    spec: JobSpec,
    *,
    workers: int | None = None,
    out: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    on_output: OutputSink | None = None,
    layers: frozenset[str] | None = None,
    identity: Callable[[], NodeIdentity] | None = None,
    fork_server: StartedServer | None = None,
) -> RunResult:
    """Run ``spec`` with ``workers`` sandboxed local workers and deliver it to ``out``.

    ``identity()`` (the home's, for ``octop2p run``; a new one if None) signs the
    manifest; it is called once the job is done, so that loading keys and crypto costs
    nothing before the job starts. ``fork_server``: one started already (`start_server`),
    booting while the caller imported the engine."""
    workers = local_workers(workers)
    out = out or default_out(spec.options.name)
    check_out(out)
    layers = usable_layers() if layers is None else layers
    job_id = secrets.token_hex(6)
    started = time.monotonic()
    with (
        collapse_groups(),
        tempfile.TemporaryDirectory(prefix=f"octop2p-{spec.options.name}-") as tmp,
    ):
        async with open_fork_server(fork_server) as fs:
            runner = local_runner(spec, fs, workers=workers, work_dir=Path(tmp), layers=layers,
                                  on_progress=on_progress, on_output=on_output)
            provenance = Provenance(Path(tmp))
            runner.on_accepted = provenance.add
            results_dir = await runner.run()
            package = await trio.to_thread.run_sync(package_hash_of, spec)
            signer = identity() if identity is not None else _new_identity()
            await provenance.seal(results_dir, signer, job_id=job_id,
                                  name=spec.options.name, package=package)
        delivered = deliver(results_dir, out, job_name=spec.options.name, job_id=job_id)
    return RunResult(
        job_id=job_id,
        name=spec.options.name,
        out=delivered,
        fragments=runner.accepted,
        seconds=time.monotonic() - started,
        workers=runner.machine.counts(),
    )
