"""The node behind the commands: the one running in the home, or a temporary one; and
`octop2p node` itself, with its start-up errors worded for the user.

Imported only when a command runs (it pulls in trio and the node).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.api import NodeAPI
from octop2p.cli._out import echo_json
from octop2p.errors import NoNodeError
from octop2p.net._control import ControlClient
from octop2p.net._control import serve as serve_control


@asynccontextmanager
async def node_api(home: Home, *, temporary_ok: bool = True) -> AsyncIterator[Any]:
    """The API of the node running in ``home``, or of a temporary in-process one."""
    try:
        client = await ControlClient.connect(home.control_socket)
    except NoNodeError:
        if not temporary_ok:
            raise
    else:
        # Yielded outside the try: a NoNodeError of the caller's is not "no node here".
        yield client
        return
    from octop2p.net._start import build_node, start_node  # the node, only when needed

    with home.lock():
        config = Config.load(home)
        # A temporary node listens on any free port and stops with this command.
        node = build_node(home, config, listen_port=0, donate=False, own_jobs_local=True)
        async with trio.open_nursery() as nursery:
            await start_node(nursery, node, home.config_path)
            try:
                yield NodeAPI(node)
            finally:
                nursery.cancel_scope.cancel()


async def call(home: Home, cmd: str, temporary: bool = False, **args: Any) -> Any:
    """One command on the home's node (or a temporary one, if ``temporary``)."""
    async with node_api(home, temporary_ok=temporary) as api:
        return await api.call(cmd, **args)


def run_node(home: Home, overrides: dict[str, Any], as_json: bool, err: Any, *,
             resume: bool = True) -> None:
    """`octop2p node`: take the home, start the node, serve until SIGTERM."""
    from octop2p.net._start import home_error

    try:
        with home.lock():
            Config.write_default(home)
            config = Config.load(home, **overrides)
            trio.run(_serve_node, home, config, as_json, err, resume)
    except PermissionError as exc:
        raise home_error(home, exc) from None


async def _serve_node(home: Home, config: Config, as_json: bool, err: Any,
                      resume: bool = True) -> None:
    from octop2p.net._start import build_node, start_node

    node = build_node(home, config, resume=resume)
    if node.swarm is None:
        err.print(
            "[yellow]warning:[/] this node is in no swarm, so it works alone; "
            "`octop2p swarm create` or `octop2p swarm join CODE`"
        )
    async with trio.open_nursery() as nursery:
        await start_node(nursery, node, home.config_path)
        await nursery.start(serve_control, NodeAPI(node), home.control_socket)
        info = node.info()
        err.print(
            f"node {info['id']} listening on port {info['port']}; donating: "
            f"{'yes, ' + str(info['cores']) + ' cores' if info['donating'] else 'no'}"
        )
        if as_json:
            echo_json({"node": info})
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for _ in signals:
                err.print("stopping")
                nursery.cancel_scope.cancel()
                break
