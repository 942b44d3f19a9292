"""The octo.py way: `octop2p server SCRIPT` is chief of one job and prints a one-time
code; `octop2p client HOST` works for it until the job is done. Imported only when one
of the two commands runs."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import trio

from octop2p._config import parse_address
from octop2p._home import Home
from octop2p.api import NodeAPI
from octop2p.cli._out import echo_json
from octop2p.cli._submit import _deliver, _print_output, job_failed
from octop2p.engine._limits import Limits
from octop2p.errors import NoNodeError, OctoError, UsageError
from octop2p.net._node import Node, NodeSettings
from octop2p.net._peer import LinkClosed
from octop2p.net._start import start_node
from protocol import JobCode


def address(text: str, what: str, lowest: int) -> tuple[str, int]:
    """``HOST:PORT`` from the command line; a bad one is a usage error naming ``what``."""
    try:
        return parse_address(text, what, lowest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


async def serve_script(
    home: Home, script: Path, listen: str, out: Path | None, as_json: bool, err: Any
) -> dict[str, Any]:
    """Be chief of ``script`` until it is done; returns the last `--json` line."""
    host, port = address(listen, "--listen", 0)
    code = JobCode.generate()
    node = Node(
        home.load_or_create_identity(),
        home.swarm(),
        NodeSettings(listen_host=host, listen_port=port, discovery=False, donate=False,
                     own_jobs_local=False, limits=Limits(), state_dir=None),
        job_code=code,
    )
    events = node.subscribe()
    async with trio.open_nursery() as nursery:
        await start_node(nursery, node, home.config_path)
        api = NodeAPI(node)
        status = await api.call("submit", path=str(script))
        job = status["job"]
        err.print(f"serving {status['name']} on port {node.port}. On each client machine run:")
        err.print(f"    octop2p client {_advertised_host(host)}:{node.port} --code {code}")
        if as_json:
            echo_json({"event": "serving", "code": str(code), "port": node.port, "job": job})
        nursery.start_soon(_watch, events, job, err, as_json)
        final = await api.call("wait", job=job)
        if final["state"] != "done":
            nursery.cancel_scope.cancel()
            raise job_failed(final)
        path = await _deliver(api, job, out)  # while the node still runs: it reads them
        nursery.cancel_scope.cancel()
    err.print(f"[green]done:[/] results in {path}")
    return {"event": "done", "job": job, "name": final["name"], "state": "done",
            "results": str(path), "fragments": final["fragments_done"],
            "workers": final["workers"]}


async def _watch(events: Any, job: str, err: Any, as_json: bool) -> None:
    """The job's prints; and stop once the code is retired: no client can join any more."""
    async for event in events:
        if event.get("event") == "output" and event.get("job") == job:
            if not (as_json and event.get("where") == "final"):  # stdout holds JSON lines
                _print_output(err, event.get("where", ""), event.get("text", ""))
        elif event.get("event") == "job_code_retired":
            raise OctoError(
                f"{event.get('failures')} wrong codes were tried, so this code is retired and "
                "no client can join with it any more; start `octop2p server` again for a "
                "new code, and give it only to your clients"
            )


def _advertised_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return socket.gethostname()
    return host


async def work_for(
    home: Home, host: str, job_code: JobCode | None, cores: int | None, err: Any
) -> None:
    """`octop2p client`: donate to the server at ``host`` until its job is over."""
    swarm = home.swarm() if job_code is None else None
    # The owner consented by running `client`: donate, to this server only, then exit.
    node = Node(
        home.load_or_create_identity(),
        swarm,
        NodeSettings(listen_host="127.0.0.1", listen_port=0, discovery=False, donate=True,
                     cores=cores or NodeSettings().cores, limits=Limits(), state_dir=None),
        job_code=job_code,
    )
    h, p = address(host, "HOST", 1)
    events = node.subscribe()
    async with trio.open_nursery() as nursery:
        await start_node(nursery, node, home.config_path)
        try:
            link = await node.connect(h, p)
        except (OSError, OctoError, LinkClosed) as exc:
            raise NoNodeError(f"could not join the server at {h}:{p}: {exc}") from None
        err.print(f"connected to {link.short} at {h}:{p}; working until its job is done")
        started = False
        with trio.CancelScope() as scope:
            nursery.start_soon(_cancel_when, link.closed_event, scope)
            async for event in events:
                if event["event"] == "working":
                    if event["running"]:
                        started = True
                        err.print(f"working on {event['name']}")
                    elif started:
                        break  # the job is over (the chief said so, or it failed)
        if not started:
            raise NoNodeError(f"the server at {h}:{p} closed the link before giving any work")
        err.print(f"[green]done:[/] the job of {link.short} is over")
        nursery.cancel_scope.cancel()


async def _cancel_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
