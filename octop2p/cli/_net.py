"""CLI commands that involve a node: node, submit, status, jobs, fetch, cancel, peers,
id, swarm, server and client. Registered on the ``octop2p`` group by ``cli.py``."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from octop2p._home import Home
from octop2p.errors import JobFailed, NoNodeError, OctoError, UsageError

# Each command imports what it uses in its body: `octop2p run` and the control commands
# must not load the node's networking, crypto or discovery (tests/octop2p/test_startup.py).
if TYPE_CHECKING:
    import trio

    from octop2p._config import Config
    from octop2p.net._node import Node, NodeSettings
    from protocol import JobCode, SwarmCode

log = logging.getLogger(__name__)


def settings_from(home: Home, config: Config, **extra: Any) -> NodeSettings:
    """Node settings from a home's config (flags already applied to ``config``)."""
    from octop2p.net._node import NodeSettings

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
    from octop2p.net._node import Node

    identity = home.load_or_create_identity()
    node = Node(identity, home.swarm(), settings_from(home, config, **extra))
    node.home = home
    return node


@asynccontextmanager
async def node_api(home: Home, *, temporary_ok: bool = True) -> AsyncIterator[Any]:
    """The API of the node running in ``home``, or of a temporary in-process one."""
    import trio

    from octop2p._config import Config
    from octop2p.api import NodeAPI
    from octop2p.net._control import ControlClient

    try:
        yield await ControlClient.connect(home.control_socket)
        return
    except NoNodeError:
        if not temporary_ok:
            raise
    with home.lock():
        config = Config.load(home)
        # A temporary node listens on any free port and stops with this command.
        node = build_node(home, config, listen_port=0, donate=False, own_jobs_local=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.serve)
            try:
                yield NodeAPI(node)
            finally:
                nursery.cancel_scope.cancel()


def _address(text: str, what: str, lowest: int) -> tuple[str, int]:
    from octop2p._config import parse_address

    try:
        return parse_address(text, what, lowest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    import trio

    return trio.run(functools.partial(fn, *args, **kwargs))


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str))


def register(
    main: click.Group,
    common_options: Any,
    handle_errors: Any,
    err: Any,
    setup_logging: Any,
    progress_cls: Any,
) -> None:
    """Add the node commands to the ``octop2p`` group."""

    @main.command()
    @click.option(
        "--listen", help="HOST:PORT to listen on (default from config.toml: 0.0.0.0:7878)."
    )
    @click.option("--peer", "peers", multiple=True, help="A static peer HOST:PORT (repeatable).")
    @click.option("--donate/--no-donate", default=None, help="Run others' fragments (consent).")
    @click.option("--cores", type=click.IntRange(min=1), help="Cores to donate.")
    @click.option("--no-discovery", is_flag=True, help="Do not use mDNS on the LAN.")
    @common_options
    @handle_errors
    def node(
        listen: str | None,
        peers: tuple[str, ...],
        donate: bool | None,
        cores: int | None,
        no_discovery: bool,
        home: Path | None,
        as_json: bool,
        verbose: int,
    ) -> None:
        """Run a headless node: discover peers, donate CPU if told to, be chief of jobs."""
        from octop2p._config import Config

        setup_logging(max(verbose, 1))
        the_home = Home.locate(home)
        overrides: dict[str, Any] = {}
        if listen:
            host, port = _address(listen, "--listen", 0)
            overrides.update(listen_host=host, listen_port=port)
        if peers:
            overrides["peers"] = peers
        if donate is not None:
            overrides["donate"] = donate
        if cores is not None:
            overrides["cores"] = cores
        if no_discovery:
            overrides["discovery"] = False
        with the_home.lock():
            Config.write_default(the_home)
            config = Config.load(the_home, **overrides)
            _run(_serve_node, the_home, config, as_json, err)

    @main.command()
    @click.argument("job", type=click.Path(path_type=Path))
    @click.option("--chief", help="Submit to this node (id) instead of the local one.")
    @click.option("--no-wait", is_flag=True, help="Print the job id and return at once.")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @common_options
    @handle_errors
    def submit(
        job: Path,
        chief: str | None,
        no_wait: bool,
        out: Path | None,
        home: Path | None,
        as_json: bool,
        verbose: int,
    ) -> None:
        """Submit JOB to the local node (a temporary one if none runs); show progress."""
        setup_logging(verbose)
        _run(
            _submit,
            Home.locate(home),
            job.resolve(),
            chief,
            no_wait,
            out,
            as_json,
            err,
            progress_cls,
        )

    @main.command()
    @click.argument("job_id", required=False)
    @common_options
    @handle_errors
    def status(job_id: str | None, home: Path | None, as_json: bool, verbose: int) -> None:
        """State of one job (or all), with progress."""
        setup_logging(verbose)
        result = _run(_call, Home.locate(home), "status", job=job_id)
        if as_json:
            _echo_json(result)
        else:
            _print_jobs(err, result if isinstance(result, list) else [result])

    @main.command()
    @common_options
    @handle_errors
    def jobs(home: Path | None, as_json: bool, verbose: int) -> None:
        """Every job of the local node."""
        setup_logging(verbose)
        result = _run(_call, Home.locate(home), "status", job=None)
        if as_json:
            _echo_json({"jobs": result})
        else:
            _print_jobs(err, result)

    @main.command()
    @click.argument("job_id")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @common_options
    @handle_errors
    def fetch(
        job_id: str, out: Path | None, home: Path | None, as_json: bool, verbose: int
    ) -> None:
        """Results of a finished job."""
        from octop2p.engine._results import default_out, deliver_bytes

        setup_logging(verbose)
        result = _run(_call, Home.locate(home), "results", job=job_id)
        path = deliver_bytes(
            result["tarball"],
            out or default_out(result["name"]),
            job_name=result["name"],
            job_id=result["job"],
        )
        err.print(f"results of {result['name']} in {path}")
        if as_json:
            _echo_json({"job": result["job"], "results": str(path)})

    @main.command()
    @click.argument("job_id")
    @common_options
    @handle_errors
    def cancel(job_id: str, home: Path | None, as_json: bool, verbose: int) -> None:
        """Stop a job."""
        setup_logging(verbose)
        result = _run(_call, Home.locate(home), "cancel", job=job_id)
        if as_json:
            _echo_json(result)
        else:
            err.print(f"cancelling {result['name']} ({result['job']})")

    @main.command()
    @common_options
    @handle_errors
    def peers(home: Path | None, as_json: bool, verbose: int) -> None:
        """Peers seen: id, address, cores, donating, trusted."""
        setup_logging(verbose)
        result = _run(_call, Home.locate(home), "peers", temporary=False)
        if as_json:
            _echo_json(
                {
                    "peers": [
                        {k: p[k] for k in ("id", "address", "cores", "donating", "trusted")}
                        for p in result
                    ]
                }
            )
            return
        if not result:
            err.print("no peers seen yet")
        for p in result:
            err.print(
                f"{p['id']}  {p['address']:21}  {p['cores']:3} cores  "
                f"{'donating' if p['donating'] else 'not donating':12}  "
                f"{'trusted' if p['trusted'] else 'untrusted'}  {p['name']}"
            )

    @main.command("id")
    @common_options
    @handle_errors
    def id_(home: Path | None, as_json: bool, verbose: int) -> None:
        """This node's id: a short, human-checkable fingerprint of its public key."""
        from protocol import NodeId

        setup_logging(verbose)
        identity = Home.locate(home).load_or_create_identity()
        node_id = str(NodeId.from_public_key(identity.public_key))
        if as_json:
            _echo_json({"id": node_id})
        else:
            click.echo(node_id)

    @main.group()
    def swarm() -> None:
        """Make, join and show the swarm: the nodes that cooperate."""

    @swarm.command("create")
    @click.option("--force", is_flag=True, help="Replace the swarm this node is in.")
    @common_options
    @handle_errors
    def swarm_create(force: bool, home: Path | None, as_json: bool, verbose: int) -> None:
        """Make a new swarm and print its join code (give it only to people you trust)."""
        from protocol import SwarmCode

        setup_logging(verbose)
        the_home = Home.locate(home)
        if the_home.swarm() is not None and not force:
            raise UsageError(
                "this node is already in a swarm (`octop2p swarm show`); use --force to replace it"
            )
        code = SwarmCode.generate()
        the_home.save_swarm(code)
        _show_swarm(code, as_json, err, created=True)

    @swarm.command("join")
    @click.argument("code")
    @common_options
    @handle_errors
    def swarm_join(code: str, home: Path | None, as_json: bool, verbose: int) -> None:
        """Join the swarm whose join code is CODE."""
        from protocol import CodeError, SwarmCode

        setup_logging(verbose)
        try:
            parsed = SwarmCode.parse(code)
        except CodeError as exc:
            raise UsageError(str(exc)) from None
        Home.locate(home).save_swarm(parsed)
        _show_swarm(parsed, as_json, err, created=False)

    @swarm.command("show")
    @common_options
    @handle_errors
    def swarm_show(home: Path | None, as_json: bool, verbose: int) -> None:
        """Show this node's swarm and its join code."""
        setup_logging(verbose)
        code = Home.locate(home).swarm()
        if code is None:
            raise UsageError(
                "this node is in no swarm: `octop2p swarm create` or `octop2p swarm join CODE`"
            )
        _show_swarm(code, as_json, err, created=False)

    @main.command()
    @click.argument("script", type=click.Path(path_type=Path))
    @click.option("--listen", default="0.0.0.0:7878", show_default=True, help="HOST:PORT.")
    @click.option("-o", "--out", type=click.Path(path_type=Path), help="Where the results go.")
    @common_options
    @handle_errors
    def server(
        script: Path, listen: str, out: Path | None, home: Path | None, as_json: bool, verbose: int
    ) -> None:
        """The octo.py way: be chief of SCRIPT and wait for clients; prints a one-time code."""
        setup_logging(verbose)
        _run(_server, Home.locate(home), script.resolve(), listen, out, as_json, err)

    @main.command()
    @click.argument("host")
    @click.option("--code", help="The one-time code `octop2p server` printed.")
    @click.option("--cores", type=click.IntRange(min=1), help="Worker processes.")
    @common_options
    @handle_errors
    def client(
        host: str,
        code: str | None,
        cores: int | None,
        home: Path | None,
        as_json: bool,
        verbose: int,
    ) -> None:
        """The octo.py way: work for the server at HOST until its job is done."""
        from protocol import CodeError, JobCode

        setup_logging(verbose)
        job_code = None
        if code is not None:
            try:
                job_code = JobCode.parse(code)
            except CodeError as exc:
                raise UsageError(str(exc)) from None
        _run(_client, Home.locate(home), host, job_code, cores, err)


# --- command bodies -------------------------------------------------------------------------


async def _serve_node(home: Home, config: Config, as_json: bool, err: Any) -> None:
    import trio

    from octop2p.api import NodeAPI
    from octop2p.net._control import serve as serve_control

    node = build_node(home, config)
    if node.swarm is None:
        err.print(
            "[yellow]warning:[/] this node is in no swarm, so it works alone; "
            "`octop2p swarm create` or `octop2p swarm join CODE`"
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        await nursery.start(serve_control, NodeAPI(node), home.control_socket)
        info = node.info()
        err.print(
            f"node {info['id']} listening on port {info['port']}; donating: "
            f"{'yes, ' + str(info['cores']) + ' cores' if info['donating'] else 'no'}"
        )
        if as_json:
            _echo_json({"node": info})
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
            async for _ in signals:
                err.print("stopping")
                nursery.cancel_scope.cancel()
                break


async def _call(home: Home, cmd: str, temporary: bool = False, **args: Any) -> Any:
    async with node_api(home, temporary_ok=temporary) as api:
        return await api.call(cmd, **args)


async def _submit(
    home: Home,
    job: Path,
    chief: str | None,
    no_wait: bool,
    out: Path | None,
    as_json: bool,
    err: Any,
    progress_cls: Any,
) -> None:
    import trio

    async with node_api(home) as api:
        if chief is not None:
            await _wait_for_peer(api, chief)
        status = await api.call("submit", path=str(job), chief=chief)
        job_id = status["job"]
        if no_wait:
            err.print(f"submitted {status['name']} as job {job_id}")
            if as_json:
                _echo_json({"job": job_id, "state": status["state"]})
            return
        with progress_cls(enabled=True) as progress:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_follow, api, job_id, progress, as_json, nursery.cancel_scope)
                final = await api.call("wait", job=job_id)
                nursery.cancel_scope.cancel()
        if final["state"] != "done":
            if as_json:
                _echo_json({"job": job_id, "state": final["state"], "error": final["error"]})
            raise _job_failed(final)
        path = await _deliver(api, job_id, out, echo_output=not as_json)
        workers = ", ".join(f"{w[:7]} {n}" for w, n in final["workers"].items())
        err.print(f"[green]done:[/] {final['name']}; results in {path} (workers: {workers})")
        if as_json:
            _echo_json(
                {
                    "job": job_id,
                    "state": final["state"],
                    "results": str(path),
                    "workers": final["workers"],
                }
            )


async def _wait_for_peer(api: Any, chief: str, timeout: float = 10) -> None:
    """A temporary node needs a moment to find and link the chief named by --chief."""
    import trio

    with trio.move_on_after(timeout):
        while not any(
            p["id"].startswith(chief.upper()) and p["trusted"] for p in await api.call("peers")
        ):
            await trio.sleep(0.2)


async def _follow(api: Any, job_id: str, progress: Any, as_json: bool, scope: Any) -> None:
    """Show a job's progress from node events (and poll, for events missed)."""
    from octop2p.api import FINISHED
    from octop2p.engine._runner import Progress

    started = time.monotonic()
    async for event in api.events():
        if event.get("job") != job_id:
            continue
        if event["event"] == "progress":
            progress.update(
                Progress(
                    phase=event["phase"],
                    done=event["done"],
                    total=event["total"],
                    workers=event["workers"],
                    started=started,
                )
            )
        elif event["event"] == "job" and event.get("state") in FINISHED:
            return


def _job_failed(final: dict[str, Any]) -> JobFailed:
    """The node's report of a failed job, as the error to show (already worded in full)."""
    exc = JobFailed(final["error"] or f"the job ended {final['state']}", final.get("traceback", ""))
    exc.rule = final.get("rule")  # for --json; the message already names it
    return exc


def _print_jobs(err: Any, jobs: list[dict[str, Any]]) -> None:
    if not jobs:
        err.print("no jobs")
    for j in jobs:
        total = j["fragments_total"]
        done = f"{j['fragments_done']}/{total if total is not None else '?'}"
        err.print(
            f"{j['job'][:12]}  {j['name']:20}  {j['state']:9}  {j['phase']:9} {done:>12}  "
            f"workers: {len(j['workers'])}  {j['error']}"
        )


def _show_swarm(code: SwarmCode, as_json: bool, err: Any, *, created: bool) -> None:
    if as_json:
        _echo_json({"code": str(code), "swarm": code.swarm_id.hex()})
        return
    if created:
        err.print(
            "A new swarm. Give this join code only to people whose machines may run "
            "your jobs and whose jobs yours may run:"
        )
    click.echo(str(code))


async def _server(
    home: Home, script: Path, listen: str, out: Path | None, as_json: bool, err: Any
) -> None:
    import trio

    from octop2p.api import NodeAPI
    from octop2p.engine._limits import Limits
    from octop2p.net._node import Node, NodeSettings
    from protocol import JobCode

    host, port = _address(listen, "--listen", 0)
    code = JobCode.generate()
    identity = home.load_or_create_identity()

    node = Node(
        identity,
        home.swarm(),
        NodeSettings(
            listen_host=host,
            listen_port=port,
            discovery=False,
            donate=False,
            own_jobs_local=False,
            limits=Limits(),
            state_dir=None,
        ),
        job_code=code,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
        api = NodeAPI(node)
        status = await api.call("submit", path=str(script))
        err.print(f"serving {status['name']} on port {node.port}. On each client machine run:")
        err.print(f"    octop2p client {_advertised_host(host)}:{node.port} --code {code}")
        if as_json:
            _echo_json({"code": str(code), "port": node.port, "job": status["job"]})
        final = await api.call("wait", job=status["job"])
        if final["state"] != "done":
            nursery.cancel_scope.cancel()
            raise _job_failed(final)
        path = await _deliver(api, status["job"], out, echo_output=True)
        err.print(f"[green]done:[/] results in {path}")
        nursery.cancel_scope.cancel()


async def _deliver(api: Any, job_id: str, out: Path | None, *, echo_output: bool) -> Path:
    """Fetch a finished job's results, print what it printed, write them to ``out``."""
    from octop2p.engine._results import default_out, deliver_bytes

    results = await api.call("results", job=job_id)
    if echo_output and results.get("output"):
        sys.stdout.write(results["output"])
        sys.stdout.flush()
    return deliver_bytes(
        results["tarball"],
        out or default_out(results["name"]),
        job_name=results["name"],
        job_id=job_id,
    )


def _advertised_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        import socket

        return socket.gethostname()
    return host


async def _client(
    home: Home, host: str, job_code: JobCode | None, cores: int | None, err: Any
) -> None:
    import trio

    from octop2p.engine._limits import Limits
    from octop2p.net._node import Node, NodeSettings
    from octop2p.net._peer import LinkClosed

    identity = home.load_or_create_identity()
    swarm = home.swarm() if job_code is None else None
    if swarm is None and job_code is None:
        raise UsageError("give the server's one-time code with --code, or join its swarm")
    # The owner consented by running `client`: donate, to this server only, then exit.
    node = Node(
        identity,
        swarm,
        NodeSettings(
            listen_host="127.0.0.1",
            listen_port=0,
            discovery=False,
            donate=True,
            cores=cores or NodeSettings().cores,
            limits=Limits(),
            state_dir=None,
        ),
        job_code=job_code,
    )
    h, p = _address(host, "HOST", 1)
    events = node.subscribe()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.serve)
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
