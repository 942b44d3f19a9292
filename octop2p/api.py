"""The node API: one command registry for the CLI, the control socket and the GUI.

``NodeAPI(node).call(cmd, **args)`` runs a command against a node in this process and
returns plain data (dicts, lists, str, bytes): exactly what the control socket sends
back to a ``ControlClient`` in another process. Errors are octop2p errors, carried over
the socket with their exit code.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from octop2p.errors import OctoError, UsageError

if TYPE_CHECKING:
    from octop2p.net._hosted import JobRecord
    from octop2p.net._node import Node

log = logging.getLogger(__name__)

#: ``protocol.JobState`` values of a job that is over. Spelled out, not imported: the
#: control commands import this module and must not load the protocol's crypto.
FINISHED = {"done", "failed", "cancelled"}


def job_status(node: Node, record: JobRecord) -> dict[str, Any]:
    """A job as the API shows it (the `status --json` shape, plus details)."""
    progress = record.progress
    workers: dict[str, int] = {}
    for worker, count in (progress.workers if progress else {}).items():
        # Local slots are this node's own work.
        key = str(node.id) if worker.startswith("local-") else worker
        workers[key] = workers.get(key, 0) + count
    return {
        "job": record.id_hex,
        "name": record.name,
        "state": record.state.value,
        "phase": progress.phase if progress else "",
        "fragments_done": progress.done if progress else 0,
        "fragments_total": progress.total if progress else None,
        "workers": workers,
        "started": record.started,
        "finished": record.finished,
        "error": record.error,
        "rule": record.error_rule,
        "traceback": record.traceback,
        "has_results": record.results is not None,
    }


class NodeAPI:
    """Commands against a node running in this process."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def call(self, cmd: str, **args: Any) -> Any:
        """Run one command; raises UsageError for an unknown one."""
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            raise UsageError(f"unknown node command {cmd!r}")
        return await handler(**args)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Node events from now on (peers up/down, job progress, job done, output)."""
        receive = self.node.subscribe()
        async with receive:
            async for event in receive:
                yield event

    def _job(self, job: str) -> Any:
        found = self.node.job(job)
        if found is None:
            raise UsageError(f"no job {job!r} on this node (see `octop2p jobs`)")
        return found

    async def cmd_info(self) -> dict[str, Any]:
        return self.node.info()

    async def cmd_peers(self) -> list[dict[str, Any]]:
        return [vars(p) | {} for p in self.node.peers()]

    async def cmd_submit(self, path: str, chief: str | None = None) -> dict[str, Any]:
        record = await self.node.submit(Path(path), chief=chief)
        return job_status(self.node, record)

    async def cmd_status(self, job: str | None = None) -> Any:
        if job is None:
            return [job_status(self.node, r) for r in self.node.records()]
        return job_status(self.node, self._job(job).record)

    async def cmd_cancel(self, job: str) -> dict[str, Any]:
        found = self._job(job)
        found.cancel()
        return job_status(self.node, found.record)

    async def cmd_results(self, job: str) -> dict[str, Any]:
        found = self._job(job)
        record = found.record
        if record.results is None:
            raise OctoError(f"job {record.id_hex} has no results ({record.state.value})")
        return {"job": record.id_hex, "name": record.name, "tarball": record.results,
                "output": "".join(record.output)}

    async def cmd_wait(self, job: str) -> dict[str, Any]:
        found = self._job(job)
        await found.done.wait()
        return job_status(self.node, found.record)

    async def cmd_donate(self, on: bool, cores: int | None = None) -> dict[str, Any]:
        self.node.set_donating(on, cores)
        return self.node.info()

    async def cmd_running(self) -> list[dict[str, Any]]:
        return [
            {"job": r.job_id, "name": r.name, "chief": r.chief, "started": r.started,
             "in_progress": sorted(r.in_progress), "done": r.done}
            for r in self.node.worker.running()
        ]

    async def cmd_recent_events(self) -> list[dict[str, Any]]:
        return list(self.node.recent_events)
