"""``octop2p blocked``: chiefs this donor refuses, and ``--unblock ID`` to lift a block."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from octop2p.errors import NoNodeError, UsageError

# Imported in the command bodies: registering commands must stay light (test_startup.py).
if TYPE_CHECKING:
    from octop2p._home import Home


async def _unblock(home: Home, chief: str) -> list[str]:
    """Through the running node (it holds the record), else in the home's file."""
    from octop2p.net._control import ControlClient
    from octop2p.net._guard import BREACHES_FILE, ChiefGuard

    try:
        api = await ControlClient.connect(home.control_socket)
    except NoNodeError:
        with home.lock():  # no node may start meanwhile and overwrite the file
            guard = ChiefGuard.load(home.path / BREACHES_FILE)
            lifted = guard.unblock(chief)
            if lifted:
                guard.save()
            return lifted
    result: list[str] = await api.call("unblock", chief=chief)
    return result


def register(main: click.Group, common_options: Any, handle_errors: Any, err: Any,
             setup_logging: Any) -> None:
    """Add ``blocked`` to the ``octop2p`` group."""

    @main.command()
    @click.option("--unblock", "chief", metavar="ID",
                  help="Lift the block of this chief (its node id, or a unique prefix).")
    @common_options
    @handle_errors
    def blocked(chief: str | None, home: Path | None, as_json: bool, verbose: int) -> None:
        """Chiefs whose jobs this node refuses, because they broke sandbox rules here.

        A block lasts block_hours (config.toml); --unblock ID lifts it now."""
        import trio

        from octop2p._home import Home
        from octop2p.net._guard import BREACHES_FILE, ChiefGuard

        setup_logging(verbose)
        the_home = Home.locate(home)
        if chief is not None:
            lifted = trio.run(_unblock, the_home, chief)
            if not lifted:
                raise UsageError(f"no blocked chief has an id starting with {chief!r} "
                                 "(see `octop2p blocked`)")
            if as_json:
                click.echo(json.dumps({"unblocked": lifted}))
            for c in lifted:
                err.print(f"unblocked chief {c}: its jobs are welcome here again",
                          markup=False, highlight=False)
            return
        # The node writes every change to the file at once: it is always current.
        blocks = ChiefGuard.load(the_home.path / BREACHES_FILE).blocks()
        if as_json:
            click.echo(json.dumps({"blocked": blocks}))
            return
        if not blocks:
            err.print("no chief is blocked here")
        for b in blocks:
            until = time.strftime("%Y-%m-%d %H:%M", time.localtime(b["until"]))
            err.print(f"{b['chief']}  blocked until {until}: {b['reason']}", markup=False,
                      highlight=False)
