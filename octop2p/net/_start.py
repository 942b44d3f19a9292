"""Building and starting a node from a home and its config: one way for the CLI
(`octop2p node`, a temporary node for `submit`), `octop2p server` and the app."""

from __future__ import annotations

import errno
import socket
from pathlib import Path
from typing import Any

import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.engine._groups import most_relevant
from octop2p.errors import OctoError, UsageError
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
        packages_mb=config.packages_mb,
        jobs_mb=config.jobs_mb,
        block_after_breaches=config.block_after_breaches,
        block_hours=config.block_hours,
        reattach_seconds=config.reattach_seconds,
        handover_seconds=config.handover_seconds,
        journal=config.journal,
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
