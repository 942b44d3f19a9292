"""`octop2p server` and `octop2p client`: the octo.py way (bodies in ``_octo``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from octop2p.cli._out import echo_json
from octop2p.errors import UsageError


def register_octo(ctx: Any) -> None:
    """Add ``server`` and ``client``."""

    @ctx.main.command()
    @click.argument("script", type=click.Path(path_type=Path))
    @click.option("--listen", default="0.0.0.0:7878", show_default=True, help="HOST:PORT.")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @ctx.common
    @ctx.handle
    def server(script: Path, listen: str, out: Path | None, home: Path | None, as_json: bool,
               verbose: int) -> None:
        """The octo.py way: be chief of SCRIPT and wait for clients; prints a one-time code.

        With --json, JSON lines: {"event": "serving", "code", "port", "job"} once it
        listens, then one object when it ends ({"event": "done", ...} or the error).
        """
        import trio

        from octop2p._home import Home
        from octop2p.cli._octo import serve_script
        from octop2p.cli._out import check_job_path

        ctx.setup_logging(verbose)
        check_job_path(script, out)
        the_home = Home.locate(home)
        result = trio.run(
            lambda: serve_script(the_home, script.resolve(), listen, out, as_json, ctx.err)
        )
        if as_json:
            echo_json(result)

    @ctx.main.command()
    @click.argument("host")
    @click.option("--code", help="The one-time code `octop2p server` printed (asked for on "
                  "a terminal when not given).")
    @click.option("--cores", type=click.IntRange(min=1), help="Worker processes.")
    @ctx.common
    @ctx.handle
    def client(host: str, code: str | None, cores: int | None, home: Path | None,
               as_json: bool, verbose: int) -> None:
        """The octo.py way: work for the server at HOST until its job is done."""
        import trio

        from octop2p._home import Home
        from octop2p.cli._octo import work_for
        from protocol import CodeError, JobCode

        ctx.setup_logging(verbose)
        the_home = Home.locate(home)
        if code is None and the_home.swarm() is None:
            if not (sys.stdin.isatty() and sys.stderr.isatty()):
                raise UsageError(
                    "give the server's one-time code with --code (or join its swarm)"
                )
            code = click.prompt("the one-time code `octop2p server` printed", err=True)
        job_code = None
        if code is not None:
            try:
                job_code = JobCode.parse(code.strip())
            except CodeError as exc:
                raise UsageError(str(exc)) from None
        trio.run(lambda: work_for(the_home, host, job_code, cores, ctx.err))
        if as_json:
            echo_json({"server": host, "state": "done"})
