"""CLI commands that involve a node: node, submit, status, jobs, fetch, cancel, peers,
id, swarm, server and client. Registered on the ``octop2p`` group by ``cli/__init__.py``.

Only click is imported here: each command imports the node, trio and the protocol when
it runs (from ``_nodes``, ``_submit``, ``_octo``), so that `octop2p --version` and
`octop2p run` start quickly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from octop2p.cli._out import DOCS_SWARM, echo_json, jobs_table, peers_table
from octop2p.errors import Interrupted


def build_node(*args: Any, **kwargs: Any) -> Any:
    """A node for a home (see `octop2p.net._start.build_node`)."""
    from octop2p.net._start import build_node as build

    return build(*args, **kwargs)


def _home(home: Path | None) -> Any:
    from octop2p._home import Home

    return Home.locate(home)


def _call(home: Path | None, cmd: str, temporary: bool = False, **args: Any) -> Any:
    import trio

    from octop2p.cli._nodes import call

    return trio.run(lambda: call(_home(home), cmd, temporary, **args))


def _is_terminal() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


class _Ctx:
    """What every command shares: the group, the decorators, the console, the logging."""

    def __init__(self, main: click.Group, common_options: Any, handle_errors: Any, err: Any,
                 setup_logging: Any, progress_cls: Any) -> None:
        self.main, self.common, self.handle = main, common_options, handle_errors
        self.err, self.setup_logging, self.progress_cls = err, setup_logging, progress_cls


def register(main: click.Group, common_options: Any, handle_errors: Any, err: Any,
             setup_logging: Any, progress_cls: Any) -> None:
    """Add the node commands to the ``octop2p`` group."""
    ctx = _Ctx(main, common_options, handle_errors, err, setup_logging, progress_cls)
    _register_node(ctx)
    _register_submit(ctx)
    _register_jobs(ctx)
    _register_peers(ctx)
    from octop2p.cli._swarm import register_swarm

    register_swarm(ctx)
    from octop2p.cli._octo_commands import register_octo

    register_octo(ctx)


def _register_node(ctx: _Ctx) -> None:
    @ctx.main.command()
    @click.option(
        "--listen", help="HOST:PORT to listen on (default from config.toml: 0.0.0.0:7878)."
    )
    @click.option("--peer", "peers", multiple=True, help="A static peer HOST:PORT (repeatable).")
    @click.option("--donate/--no-donate", default=None, help="Run others' fragments (consent).")
    @click.option("--cores", type=click.IntRange(min=1), help="Cores to donate.")
    @click.option("--no-discovery", is_flag=True, help="Do not use mDNS on the LAN.")
    @click.option("--no-resume", is_flag=True,
                  help="Drop the jobs a crash or a stop interrupted instead of resuming them.")
    @ctx.common
    @ctx.handle
    def node(listen: str | None, peers: tuple[str, ...], donate: bool | None,
             cores: int | None, no_discovery: bool, no_resume: bool, home: Path | None,
             as_json: bool, verbose: int) -> None:
        """Run a headless node: discover peers, donate CPU if told to, be chief of jobs.

        With --json, one JSON line ({"node": ...}) once the node listens.
        """
        from octop2p.cli._nodes import run_node
        from octop2p.cli._octo import address

        ctx.setup_logging(max(verbose, 1))
        overrides: dict[str, Any] = {}
        if listen:
            host, port = address(listen, "--listen", 0)
            overrides.update(listen_host=host, listen_port=port)
        if peers:
            overrides["peers"] = peers
        if donate is not None:
            overrides["donate"] = donate
        if cores is not None:
            overrides["cores"] = cores
        if no_discovery:
            overrides["discovery"] = False
        run_node(_home(home), overrides, as_json, ctx.err, resume=not no_resume)


def _register_submit(ctx: _Ctx) -> None:
    @ctx.main.command()
    @click.argument("job", type=click.Path(path_type=Path))
    @click.option("--chief", help="Id (or prefix) of a linked node to be the job's chief.")
    @click.option("--no-wait", is_flag=True, help="Submit, print the job id and return.")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @ctx.common
    @ctx.handle
    def submit(job: Path, chief: str | None, no_wait: bool, out: Path | None,
               home: Path | None, as_json: bool, verbose: int) -> None:
        """Submit JOB to the local node (a temporary one if none runs); show progress.

        Prints the job's id at once, and what it waits for while no worker takes it.
        Ctrl-C asks (on a terminal) whether to cancel the job or leave it running.
        With --json, one JSON object on stdout when the command ends.
        """
        import trio

        from octop2p.cli._out import check_job_path
        from octop2p.cli._submit import Submission
        from octop2p.cli._submit import submit as body
        from octop2p.engine._groups import most_relevant

        ctx.setup_logging(verbose)
        check_job_path(job, out)
        the_home, sub = _home(home), Submission()
        try:
            result = trio.run(lambda: body(the_home, job.resolve(), chief, no_wait, out,
                                           ctx.err, ctx.progress_cls, sub, as_json))
        except BaseException as exc:
            if not isinstance(most_relevant(exc), KeyboardInterrupt):
                raise
            _interrupted(the_home, sub, as_json, ctx.err)
        if as_json:
            echo_json(result)


def _interrupted(home: Any, sub: Any, as_json: bool, err: Any) -> None:
    """Ctrl-C on `submit`: the job may go on without us; say how to reach it."""
    from octop2p.cli._submit import say_where

    if sub.job is None:
        raise Interrupted("interrupted before the job was submitted")
    if sub.temporary:
        exc = Interrupted(
            f"interrupted: job {sub.job} stopped with the temporary node of this command; "
            f"start `octop2p node` first for jobs that outlive `submit` ({DOCS_SWARM})"
        )
    else:
        cancel = not as_json and _is_terminal() and _ask_cancel(sub.job, err)
        if cancel:
            _call(home.path, "cancel", job=sub.job)
            exc = Interrupted(f"interrupted: job {sub.job} ({sub.name}) cancelled; "
                              f"{say_where(sub.job)}")
        else:
            exc = Interrupted(
                f"interrupted: job {sub.job} ({sub.name}) keeps running on the node; "
                f"{say_where(sub.job)}"
            )
    exc.job = sub.job
    raise exc


def _ask_cancel(job: str, err: Any) -> bool:
    """Ask on the terminal whether to cancel ``job``: c or cancel, l or leave (the
    default); another Ctrl-C, or the end of input, leaves it running."""

    def answer(text: str) -> bool:
        word = text.strip().lower()
        if word[:1] not in ("c", "l"):
            raise click.UsageError("answer c (cancel it) or l (leave it running)")
        return word[:1] == "c"

    err.print()
    try:
        return bool(click.prompt(
            f"job {job} is still running: [c]ancel it or [l]eave it running?",
            default="l", value_proc=answer, err=True))
    except click.Abort:
        return False


def _register_jobs(ctx: _Ctx) -> None:
    @ctx.main.command()
    @click.argument("job_id", required=False)
    @ctx.common
    @ctx.handle
    def status(job_id: str | None, home: Path | None, as_json: bool, verbose: int) -> None:
        """State of one job (or all), with progress and what a job waits for."""
        ctx.setup_logging(verbose)
        result = _statuses(home, job_id)
        if as_json:
            echo_json(result[0] if job_id else result)
        else:
            jobs_table(result)

    @ctx.main.command()
    @ctx.common
    @ctx.handle
    def jobs(home: Path | None, as_json: bool, verbose: int) -> None:
        """Every job of the local node, as a table (one JSON object with --json)."""
        ctx.setup_logging(verbose)
        result = _statuses(home, None)
        if as_json:
            echo_json({"jobs": result})
        else:
            jobs_table(result)

    @ctx.main.command()
    @click.argument("job_id")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @ctx.common
    @ctx.handle
    def fetch(job_id: str, out: Path | None, home: Path | None, as_json: bool,
              verbose: int) -> None:
        """Results of a finished job (exit code 2 while it still runs)."""
        from octop2p.engine._results import check_out, default_out, deliver_bytes

        ctx.setup_logging(verbose)
        if out is not None:
            check_out(out)
        result = _call(home, "results", job=job_id)
        path = deliver_bytes(result["tarball"], out or default_out(result["name"]),
                             job_name=result["name"], job_id=result["job"],
                             max_bytes=result.get("max_bytes"))
        ctx.err.print(f"results of {result['name']} in {path}")
        if as_json:
            echo_json({"job": result["job"], "name": result["name"], "results": str(path)})

    @ctx.main.command()
    @click.argument("job_id")
    @ctx.common
    @ctx.handle
    def cancel(job_id: str, home: Path | None, as_json: bool, verbose: int) -> None:
        """Stop a job."""
        ctx.setup_logging(verbose)
        result = _call(home, "cancel", job=job_id)
        if as_json:
            echo_json(result)
        else:
            ctx.err.print(f"cancelling {result['name']} ({result['job']})")


def _statuses(home: Path | None, job_id: str | None) -> list[dict[str, Any]]:
    """Jobs as `status` shows them, with what a job that has not started waits for."""
    import trio

    from octop2p.api import no_worker_reason
    from octop2p.cli._nodes import node_api

    async def ask() -> list[dict[str, Any]]:
        async with node_api(_home(home), temporary_ok=False) as api:
            result = await api.call("status", job=job_id)
            jobs = result if isinstance(result, list) else [result]
            idle = [j for j in jobs if j["state"] in ("queued", "running")
                    and not j["fragments_done"] and j["phase"] != "remote"]
            if idle:
                reason = no_worker_reason(await api.call("info"), await api.call("peers"))
                for j in idle:
                    j["waiting"] = j.get("waiting") or reason
            return jobs

    return trio.run(ask)


def _register_peers(ctx: _Ctx) -> None:
    @ctx.main.command()
    @ctx.common
    @ctx.handle
    @click.option("--forgive", metavar="ID", default=None,
                  help="Lift the quarantine of a node caught returning wrong results.")
    def peers(home: Path | None, as_json: bool, verbose: int, forgive: str | None) -> None:
        """Peers seen: id, address, cores, donating, trusted, quarantined (a table on
        stdout)."""
        ctx.setup_logging(verbose)
        if forgive is not None:
            _call(home, "forgive", node=forgive)
            if as_json:
                echo_json({"forgiven": forgive})
            else:
                ctx.err.print(f"node {forgive} is no longer quarantined: it may work for "
                              "this node's jobs again")
            return
        result = _call(home, "peers")
        if as_json:
            keys = ("id", "address", "cores", "donating", "trusted", "name", "quarantined",
                    "reason")
            echo_json({"peers": [{k: p.get(k) for k in keys} for p in result]})
        elif not result:
            ctx.err.print("no peers seen yet")
        else:
            peers_table(result)

    @ctx.main.command("id")
    @ctx.common
    @ctx.handle
    def id_(home: Path | None, as_json: bool, verbose: int) -> None:
        """This node's id: a short, human-checkable fingerprint of its public key."""
        from protocol import NodeId

        ctx.setup_logging(verbose)
        identity = _home(home).load_or_create_identity()
        node_id = str(NodeId.from_public_key(identity.public_key))
        if as_json:
            echo_json({"id": node_id})
        else:
            click.echo(node_id)


__all__ = ["build_node", "register"]
