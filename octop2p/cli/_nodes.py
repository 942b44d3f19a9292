"""The node behind the commands: the one running in the home, or a temporary one; and
`octop2p node` itself, with its start-up errors worded for the user.

Imported only when a command runs (it pulls in trio and the node).
"""

from __future__ import annotations

import errno
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.api import NodeAPI
from octop2p.cli._out import echo_json
from octop2p.engine._groups import most_relevant
from octop2p.errors import NoNodeError, OctoError, UsageError
from octop2p.net._control import ControlClient
from octop2p.net._control import serve as serve_control
from octop2p.net._node import Node, NodeSettings


def settings_from(home: Home, config: Config, **extra: Any) -> NodeSettings:
    """Node settings from a home's config (flags already applied to ``config``)."""
    values: dict[str, Any] = dict(
        listen_host=config.listen_host,
        listen_port=config.listen_port,
        peers=config.peers,
        discovery=config.discovery,
        donate=config.donate,
        cores=config.cores,
        limits=config.limits,
        name=config.name,
        unconfined_trusted_swarm=config.unconfined_trusted_swarm,
        state_dir=home.path,
    )
    values.update(extra)
    return NodeSettings(**values)


def build_node(home: Home, config: Config, **extra: Any) -> Node:
    """A node for ``home``: its identity, its swarm, its config."""
    identity = home.load_or_create_identity()
    node = Node(identity, home.swarm(), settings_from(home, config, **extra))
    node.home = home
    return node


def startup_error(exc: BaseException, host: str, port: int, config_path: Path) -> OctoError:
    """A node that could not start listening, as one line naming what to change."""
    leaf = most_relevant(exc) if isinstance(exc, BaseExceptionGroup) else exc
    if isinstance(leaf, OctoError):
        return leaf
    where = f"listen_host, listen_port in {config_path}"
    if isinstance(leaf, socket.gaierror):
        return UsageError(
            f"cannot listen on {host!r}: not an address of this machine ({leaf.strerror}); "
            f"give one with --listen HOST:PORT (0.0.0.0: every interface) or set {where}"
        )
    if isinstance(leaf, OSError) and leaf.errno == errno.EADDRINUSE:
        return UsageError(
            f"port {port} on {host} is already in use (another octop2p node, or the app?); "
            f"choose another with --listen {host}:PORT (0: any free port) or set {where}"
        )
    if isinstance(leaf, OSError) and leaf.errno in (errno.EACCES, errno.EPERM):
        return UsageError(
            f"not allowed to listen on {host}:{port} (ports below 1024 need root); "
            f"choose another with --listen HOST:PORT or set {where}"
        )
    if isinstance(leaf, OSError) and leaf.errno == errno.EADDRNOTAVAIL:
        return UsageError(
            f"{host} is not an address of this machine; give one with --listen HOST:PORT "
            f"or set {where}"
        )
    if isinstance(leaf, OSError):
        return UsageError(f"the node could not start: {leaf.strerror or leaf}; see {where}")
    raise exc


def home_error(home: Home, exc: OSError) -> UsageError:
    """A home the node cannot write, naming the setting to change."""
    return UsageError(
        f"cannot use {home.path} as the node's home ({exc.strerror or exc}); "
        "choose another with --home DIR or OCTOP2P_HOME"
    )


async def start_node(nursery: trio.Nursery, node: Node, config_path: Path) -> None:
    """Start ``node`` in ``nursery``; a socket error becomes a one-line UsageError."""
    try:
        await nursery.start(node.serve)
    except (OSError, BaseExceptionGroup) as exc:
        raise startup_error(
            exc, node.settings.listen_host, node.settings.listen_port, config_path
        ) from None


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


def run_node(home: Home, overrides: dict[str, Any], as_json: bool, err: Any) -> None:
    """`octop2p node`: take the home, start the node, serve until SIGTERM."""
    try:
        with home.lock():
            Config.write_default(home)
            config = Config.load(home, **overrides)
            trio.run(_serve_node, home, config, as_json, err)
    except PermissionError as exc:
        raise home_error(home, exc) from None


async def _serve_node(home: Home, config: Config, as_json: bool, err: Any) -> None:
    node = build_node(home, config)
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
