"""Where the app's node lives: attach to the node running in the home, or run one here.

As the CLI does (Electrum's daemon model), the app first tries the home's control
socket. If a node answers there (`octop2p node`), the app is a client of it, through
`ControlClient`. Otherwise the app runs the node in its own process, on its own trio
run, and serves the same control socket, so that `octop2p submit` and the other
commands attach to the app's node while it runs. Either way the rest of the app sees
one interface: ``call(cmd, **args)`` and ``events()``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from octop2p.api import (
    Config,
    ControlClient,
    Home,
    NodeAPI,
    build_node,
    serve_control,
    start_node,
)
from octop2p.errors import NoNodeError

log = logging.getLogger(__name__)

ATTACHED = "attached"
IN_PROCESS = "in-process"


@dataclass
class NodeHandle:
    """The node the app talks to, and how it reaches it."""

    api: Any  # NodeAPI or ControlClient: the same call/events interface
    mode: str  # ATTACHED or IN_PROCESS
    node: Any = None  # the Node object when it runs in this process

    @property
    def in_process(self) -> bool:
        """True if the app runs the node itself (and may restart it)."""
        return self.mode == IN_PROCESS


@asynccontextmanager
async def open_node(home: Home, *, donate: bool, cores: int,
                    cpu_percent: int) -> AsyncIterator[NodeHandle]:
    """The home's running node, or a node started here for as long as the block runs.

    ``donate`` and ``cores`` are the app's decision for a node it starts (its owner's
    choice after the pause conditions); a node it attaches to keeps its own state.
    Raises `HomeLocked` when another process holds the home without serving it (a
    temporary node of `octop2p submit`), `ConfigError` for a bad config.toml.
    """
    try:
        client = await ControlClient.connect(home.control_socket)
    except NoNodeError:
        client = None
    if client is not None:
        log.info("attached to the node running in %s", home.path)
        yield NodeHandle(client, ATTACHED)
        return
    with home.lock():
        Config.write_default(home)
        config = Config.load(home, donate=donate, cores=cores, cpu_percent=cpu_percent)
        # The owner's own jobs always run on the owner's cores (as with `octop2p submit`);
        # donation is consent to run other people's jobs.
        node = build_node(home, config, own_jobs_local=True)
        async with trio.open_nursery() as nursery:
            # A port in use or a bad address: one line naming the setting to change.
            await start_node(nursery, node, home.config_path)
            api = NodeAPI(node)
            await nursery.start(serve_control, api, home.control_socket)
            log.info("node %s runs in the app (home %s, port %d)", node.id, home.path,
                     node.port)
            try:
                yield NodeHandle(api, IN_PROCESS, node)
            finally:
                nursery.cancel_scope.cancel()
