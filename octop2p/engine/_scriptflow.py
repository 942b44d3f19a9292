"""A MapReduce script's phases on the chief: map (the script's ``source`` split into
tasks), reduce (one task per partition) and ``final``, with what a restarted chief kept
of them (map outputs and reduce results in the journal)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

import trio

from octop2p.engine._results import check_output_quota
from octop2p.errors import JobFailed

if TYPE_CHECKING:
    from octop2p.engine._runner import JobRunner

log = logging.getLogger("octop2p.engine._runner")


async def run_script(runner: JobRunner) -> None:
    """The job of a MapReduce script, from its source to output.txt."""
    parts_dir = runner.work_dir / "partitions"
    parts_dir.mkdir(exist_ok=True)
    part_files = [open(parts_dir / f"{r}.bin", "w+b") for r in range(runner.partitions)]
    reduced: dict[int, bytes] = {}
    merge = _EarlyMerge()
    try:
        await _map_phase(runner, part_files)

        def load_partition(r: int) -> list[bytes]:
            f = part_files[r]
            f.seek(0)
            out = []
            while header := f.read(8):
                out.append(f.read(int.from_bytes(header, "big")))
            return out

        kept = runner.resumed("reduce")
        reduced.update((r, logged.payload) for r, logged in kept.items()
                       if isinstance(logged.payload, bytes))
        runner._begin("reduce", list(range(runner.partitions)), reduced.__setitem__,
                    load_partition, settled=set(kept))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(merge.spawn, runner)
            await runner._wait_finished()
        await _final(runner, [reduced[r] for r in range(runner.partitions)], merge)
    finally:
        for f in part_files:
            f.close()
        shutil.rmtree(parts_dir, ignore_errors=True)
        await merge.aclose()


class _EarlyMerge:
    """The merge child for ``final``, spawned as the reduce starts: its import of the
    script (which may read the whole source again) overlaps the reduce instead of
    following it. What it prints while loading is kept for ``final``'s output, and a
    failure to load fails the job where ``final`` starts, as if it had been spawned
    there."""

    def __init__(self) -> None:
        self.child: Any = None
        self.error: BaseException | None = None
        self.printed: list[tuple[str, Any]] = []
        self.ready = trio.Event()

    async def spawn(self, runner: JobRunner) -> None:
        try:
            self.child = await runner._spawn("merge", lambda *out: self.printed.append(out))
        except Exception as exc:  # noqa: BLE001 - raised again in get()
            self.error = exc
        finally:
            self.ready.set()

    async def get(self, runner: JobRunner) -> Any:
        """The ready child, once ``runner.on_output`` is final's: its loading output first."""
        await self.ready.wait()
        if self.error is not None:
            raise self.error
        for where, text in self.printed:
            runner._emit_out(where, text)
        child, self.child = self.child, None
        return child

    async def aclose(self) -> None:
        if self.child is not None:
            await self.child.aclose()

async def _map_phase(runner: JobRunner, part_files: Sequence[IO[bytes]]) -> None:
    """Map every key of the source; each task's output goes to the partition files."""

    def store_parts(seq: int, parts: list[bytes]) -> None:
        for f, part in zip(part_files, parts, strict=True):
            f.write(len(part).to_bytes(8, "big"))
            f.write(part)

    kept = runner.resumed("map")
    for seq in sorted(kept):
        payload = kept[seq].payload
        store_parts(seq, payload if isinstance(payload, list) else [payload])
    if "map" in runner.recovered.ended:
        return  # the chief restarted after the last map: straight to reduce
    runner._begin("map", None, store_parts, settled=set(kept))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner._split_loop, "source")
        nursery.start_soon(runner._wait_finished)
    if runner.machine.table.produced == 0:
        raise JobFailed(
            message="the script's source has no keys, so there is nothing to map "
            "(are the files it reads beside the script?)", rule="empty source")
    if runner.journal is not None:
        await runner.journal.end_phase("map")

async def _final(runner: JobRunner, reduced: list[bytes], merge: _EarlyMerge) -> None:
    """Every reduced pair in key order, in one chief-side child."""
    runner._begin("final", [], lambda seq, data: None)
    runner.progress.total = 1
    with open(runner.results_dir / "output.txt", "w", encoding="utf-8") as output:
        sink = runner.on_output

        def tee(where: str, text: str) -> None:
            output.write(text)
            sink("final", text)

        runner.on_output = tee
        try:
            child = await merge.get(runner)
            try:
                await runner._call(child, ["final", reduced], "final",
                                   timeout=runner.limits.wall_seconds)
            finally:
                await child.aclose()
        finally:
            runner.on_output = sink
    check_output_quota(runner.results_dir, runner.limits)
    log.info("job %s: final took %.2f s", runner.spec.options.name,
             time.monotonic() - runner._phase_started)
    runner.progress.done = 1
    runner._report()
