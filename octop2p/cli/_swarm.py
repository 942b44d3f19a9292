"""`octop2p swarm create | join | show`: the swarm this node belongs to."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from octop2p.cli._out import DOCS_FIRST, echo_json
from octop2p.errors import UsageError


def _leave_ok(current: Any, new: Any, force: bool, what: str) -> None:
    """Leaving a swarm is the owner's choice: --force, or a yes on a terminal."""
    if current is None or force or current.swarm_id == getattr(new, "swarm_id", None):
        return
    question = (
        f"this node is in swarm {current.swarm_id.hex()[:12]}; {what} leaves it, and its "
        "members can no longer reach this node. Go on?"
    )
    if sys.stdin.isatty() and sys.stderr.isatty():
        if click.confirm(question, default=False, err=True):
            return
        raise UsageError("kept the current swarm (nothing changed)")
    raise UsageError(
        "this node is already in a swarm (`octop2p swarm show`); use --force to leave it"
    )


def register_swarm(ctx: Any) -> None:
    """Add the ``swarm`` group and its commands."""

    @ctx.main.group()
    def swarm() -> None:
        """Make, join and show the swarm: the nodes that cooperate."""

    @swarm.command("create")
    @click.option("--force", is_flag=True, help="Leave the swarm this node is in, unasked.")
    @ctx.common
    @ctx.handle
    def swarm_create(force: bool, home: Path | None, as_json: bool, verbose: int) -> None:
        """Make a new swarm and print its join code (give it only to people you trust)."""
        from octop2p._home import Home
        from protocol import SwarmCode

        ctx.setup_logging(verbose)
        the_home = Home.locate(home)
        _leave_ok(the_home.swarm(), None, force, "a new swarm")
        code = SwarmCode.generate()
        the_home.save_swarm(code)
        _show_swarm(code, as_json, ctx.err, created=True)

    @swarm.command("join")
    @click.argument("code")
    @click.option("--force", is_flag=True, help="Leave the swarm this node is in, unasked.")
    @ctx.common
    @ctx.handle
    def swarm_join(code: str, force: bool, home: Path | None, as_json: bool,
                   verbose: int) -> None:
        """Join the swarm whose join code is CODE (asks before leaving another one)."""
        from octop2p._home import Home
        from protocol import CodeError, SwarmCode

        ctx.setup_logging(verbose)
        try:
            parsed = SwarmCode.parse(code)
        except CodeError as exc:
            raise UsageError(str(exc)) from None
        the_home = Home.locate(home)
        _leave_ok(the_home.swarm(), parsed, force, "joining another swarm")
        the_home.save_swarm(parsed)
        _show_swarm(parsed, as_json, ctx.err, created=False)

    @swarm.command("show")
    @ctx.common
    @ctx.handle
    def swarm_show(home: Path | None, as_json: bool, verbose: int) -> None:
        """Show this node's swarm and its join code."""
        from octop2p._home import Home

        ctx.setup_logging(verbose)
        code = Home.locate(home).swarm()
        if code is None:
            raise UsageError(
                "this node is in no swarm: `octop2p swarm create` or `octop2p swarm join CODE`"
                f" ({DOCS_FIRST})"
            )
        _show_swarm(code, as_json, ctx.err, created=False)


def _show_swarm(code: Any, as_json: bool, err: Any, *, created: bool) -> None:
    if as_json:
        echo_json({"code": str(code), "swarm": code.swarm_id.hex()})
        return
    if created:
        err.print(
            "A new swarm. Give this join code only to people whose machines may run "
            "your jobs and whose jobs yours may run:"
        )
    click.echo(str(code))
