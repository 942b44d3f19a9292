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

import trio

from octop2p.errors import OctoError, UsageError

if TYPE_CHECKING:
    from octop2p._config import Config as Config
    from octop2p._config import set_keys as set_keys
    from octop2p._home import Home as Home
    from octop2p._home import toml_string as toml_string
    from octop2p._home import write_atomic as write_atomic
    from octop2p.engine._package import load_job as load_job
    from octop2p.engine._results import deliver_bytes as deliver_bytes
    from octop2p.net._control import ControlClient as ControlClient
    from octop2p.net._hosted import JobRecord
    from octop2p.net._node import Node
    from octop2p.net._start import build_node as build_node
    from octop2p.net._start import start_node as start_node

#: The public API beyond the command registry (`NodeAPI`), for the app and for
#: programs that embed a node: name -> the module that defines it. Loaded on first use,
#: so that `import octop2p.api` stays light for commands that never touch the network.
_EXPORTS = {
    "Config": "octop2p._config",
    "set_keys": "octop2p._config",
    "Home": "octop2p._home",
    "toml_string": "octop2p._home",
    "write_atomic": "octop2p._home",
    "load_job": "octop2p.engine._package",
    "deliver_bytes": "octop2p.engine._results",
    "ControlClient": "octop2p.net._control",
    "serve_control": "octop2p.net._control",
    "build_node": "octop2p.net._start",
    "start_node": "octop2p.net._start",
}
_RENAMED = {"serve_control": "serve"}

__all__ = ["FINISHED", "NodeAPI", "job_status", "no_worker_reason", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'octop2p.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value

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
        "has_results": record.has_results,
        # The job machine knows no node: where it has no worker at all, say what to do.
        "waiting": (NO_WORKER if progress.waiting == "no worker in reach" else progress.waiting)
        if progress else "",
        "refused": dict(record.refused),  # donor id -> why it would not work on the job
        # Resumed after its chief restarted: the results kept from before (else None).
        "resumed": record.resumed,
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
            # Says "subscribed": a client that waits for it misses no event of a job it
            # submits next (the splitter's first prints come within milliseconds).
            yield {"event": "subscribed"}
            async for event in receive:
                yield event

    def _job(self, job: str) -> Any:
        found = self.node.job(job)
        if found is None:
            raise UsageError(f"no job {job!r} on this node (see `octop2p jobs`)")
        return found

    async def cmd_info(self) -> dict[str, Any]:
        # local_slots: the cores this node gives its own jobs (0 unless it donates, or is
        # a temporary node of `submit`), for "no donating worker in reach".
        return self.node.info() | {"local_slots": self.node.local_slots()}

    async def cmd_peers(self) -> list[dict[str, Any]]:
        return [vars(p) | {} for p in self.node.peers()]

    async def cmd_submit(self, path: str, chief: str | None = None) -> dict[str, Any]:
        record = await self.node.submit(Path(path), chief=chief)
        found = self.node.job(record.id_hex)
        spec = getattr(found, "spec", None)
        # "Limit lowered" and option warnings, as `octop2p run` prints them.
        warnings = list(getattr(spec, "warnings", ()) or ())
        return job_status(self.node, record) | {"warnings": warnings}

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
        state = record.state.value
        if state not in FINISHED:
            raise UsageError(
                f"job {record.id_hex} is still {state}: it has no results yet; "
                f"follow it with `octop2p status {record.id_hex}` and fetch it once done"
            )
        tarball = await trio.to_thread.run_sync(record.read_results)
        if tarball is None:
            raise OctoError(f"job {record.id_hex} {state}, so it has no results: {record.error}")
        return {"job": record.id_hex, "name": record.name, "tarball": tarball,
                "output": "".join(record.output),
                "max_bytes": self.node.limits.merge_output_mb << 20}

    async def cmd_wait(self, job: str) -> dict[str, Any]:
        found = self._job(job)
        while True:
            await found.done.wait()
            # A job the node takes up again after a restart stands in for its record
            # (docs/jobs.md, "When the chief restarts"): wait for that one's end.
            now = self._job(job)
            if now is found:
                return job_status(self.node, found.record)
            found = now

    async def cmd_donate(
        self, on: bool, cores: int | None = None, by: str = "", persist: bool = False
    ) -> dict[str, Any]:
        """Switch donation; ``by`` names who did (for the node's log), ``persist`` writes
        the change to the node's config.toml (the owner's choice, not a pause)."""
        self.node.set_donating(on, cores, by=by or "a control-socket client")
        home = getattr(self.node, "home", None)
        if persist and home is not None:
            from octop2p._config import set_keys

            set_keys(home, donate=self.node.donating, cores=self.node.cores)
        return self.node.info()

    async def cmd_forgive(self, node: str) -> dict[str, Any]:
        """Lift a quarantine: the node may work for this node's jobs again."""
        if not self.node.forgive(node):
            raise UsageError(f"node {node} is not quarantined here (see `octop2p peers`)")
        return {"forgiven": node}

    async def cmd_running(self) -> list[dict[str, Any]]:
        return [
            {"job": r.job_id, "name": r.name, "chief": r.chief, "started": r.started,
             "in_progress": sorted(r.in_progress), "done": r.done}
            for r in self.node.worker.running()
        ]

    async def cmd_blocked(self) -> list[dict[str, Any]]:
        """Chiefs this node refuses (their jobs broke sandbox rules here)."""
        return self.node.worker.guard.blocks()

    async def cmd_unblock(self, chief: str) -> list[str]:
        """Lift the block of ``chief`` (an id or its prefix); returns the ids lifted."""
        return await self.node.worker.unblock(chief)

    async def cmd_recent_events(self) -> list[dict[str, Any]]:
        return list(self.node.recent_events)


NO_WORKER = (
    "no donating worker in reach: switch donation on here (`octop2p node --donate`) "
    "or ask a swarm member to"
)


def no_worker_reason(info: dict[str, Any], peers: list[dict[str, Any]]) -> str:
    """Why a job chiefed by the node ``info`` describes cannot start, or "".

    From ``info`` and ``peers`` replies of the API: no local slots and no trusted,
    donating peer means nothing will ever take a fragment.
    """
    slots = info.get("local_slots")
    if slots is None:
        slots = info.get("cores", 0) if info.get("donating") else 0
    if slots or any(p.get("trusted") and p.get("donating") for p in peers):
        return ""
    return NO_WORKER
