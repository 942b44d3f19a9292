"""A MapReduce script's phases on the chief: map (the script's ``source`` split into
tasks), reduce (one task per partition) and ``final``, with what a restarted chief kept
of them (map outputs and reduce results in the journal)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING

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
        await runner._wait_finished()
    finally:
        for f in part_files:
            f.close()
        shutil.rmtree(parts_dir, ignore_errors=True)
    await _final(runner, [reduced[r] for r in range(runner.partitions)])

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

async def _final(runner: JobRunner, reduced: list[bytes]) -> None:
    """Every reduced pair in key order, in one chief-side child."""
    runner._begin("final", [], lambda seq, data: None)
    runner.progress.total = 1
    with open(runner.results_dir / "output.txt", "w", encoding="utf-8") as output:
        sink = runner.on_output

        def tee(where: str, text: str) -> None:
            output.write(text)
            sink("final", text)

        runner.on_output = tee
        child = await runner._spawn("merge")
        try:
            await runner._call(child, ["final", reduced], "final",
                             timeout=runner.limits.wall_seconds)
        finally:
            runner.on_output = sink
            await child.aclose()
    check_output_quota(runner.results_dir, runner.limits)
    log.info("job %s: final took %.2f s", runner.spec.options.name,
             time.monotonic() - runner._phase_started)
    runner.progress.done = 1
    runner._report()
