"""The ``octop2p`` command line.

Results and tables go to stdout, progress and messages to stderr; ``--json`` puts one
JSON object on stdout (JSON lines for `node` and `server`, which stream).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from octop2p import __version__
from octop2p.engine._groups import collapse_groups
from octop2p.errors import Interrupted, JobFailed, OctoError

F = TypeVar("F", bound=Callable[..., Any])


class _Stderr:
    """rich's Console on stderr, made on first use: importing rich costs about as much
    as click, and `--version` or a job's start should not pay for it."""

    _console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False, soft_wrap=True)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """rich's answer; without loading rich when nothing asks it to pretend either way."""
        if self._console is None and not os.environ.keys() & {"TTY_COMPATIBLE", "FORCE_COLOR"}:
            try:
                if not sys.stderr.isatty():
                    return False
            except ValueError:  # closed
                return False
        return bool(self.console.is_terminal)

    def tagged(self, tag: str, style: str, text: str) -> None:
        """``tag: text``, the tag in ``style``. Plain while rich is not loaded and stderr
        is no terminal, where rich would add nothing (loading it: 20-50 ms)."""
        if self._console is None and not self.is_terminal:
            sys.stderr.write(f"{tag}: {text}\n")
            sys.stderr.flush()
            return
        from rich.markup import escape

        self.console.print(f"[{style}]{tag}:[/] {escape(text)}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


err: Any = _Stderr()


def common_options(fn: F) -> F:
    """--home, --json and -v, accepted by every command."""
    fn = click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="OCTOP2P_HOME",
        help="The node's state folder (default: the platform's data folder). Env: OCTOP2P_HOME.",
    )(fn)
    fn = click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")(
        fn
    )
    fn = click.option(
        "-v", "--verbose", count=True, help="More log output on stderr (-vv: debug)."
    )(fn)
    return fn


def _setup_logging(verbose: int) -> None:
    import logging  # here: `--version`, and `run` before its fork server starts, skip it

    level = logging.WARNING - 10 * min(verbose, 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def handle_errors(fn: F) -> F:
    """Turn octop2p errors into their exit codes, with a clear message on stderr."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        as_json = kwargs.get("as_json", False)
        try:
            with collapse_groups():
                return fn(*args, **kwargs)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            sys.exit(Interrupted.exit_code)
        except OctoError as exc:
            _report_error(exc, as_json)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def _report_error(exc: OctoError, as_json: bool) -> None:
    if isinstance(exc, JobFailed) and exc.traceback:
        # Plain write: rich would re-wrap the user's traceback lines.
        sys.stderr.write(exc.traceback.rstrip() + "\n")
        sys.stderr.flush()
    err.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
    if as_json:
        state = "interrupted" if isinstance(exc, Interrupted) else "failed"
        payload: dict[str, Any] = {"state": state, "error": str(exc),
                                   "exit_code": exc.exit_code}
        for key in ("job", "rule", "file", "line", "traceback"):
            if getattr(exc, key, None) is not None:
                payload[key] = getattr(exc, key)
        click.echo(json.dumps(payload))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="octop2p")
@click.option(
    "--home", type=click.Path(file_okay=False), help="The node's state folder, for every command."
)
def main(home: str | None) -> None:
    """octop2p: pool the machines on your LAN to run Python jobs, sandboxed."""
    if home is not None:
        # Given before the command (`octop2p --home X peers`): the commands read it as
        # OCTOP2P_HOME, and a --home after the command still wins.
        os.environ["OCTOP2P_HOME"] = home


def entry() -> None:
    """The `octop2p` command: `main`, then out without the interpreter's teardown."""
    from octop2p.cli._exit import run_command

    run_command(main)


class _RunProgress:
    """A rich progress bar on stderr fed by the chief's progress snapshots."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and err.is_terminal or os.environ.get("OCTOP2P_PROGRESS") == "1"
        self.bar: Any = self._bar() if self.enabled else None
        self.tasks: dict[str, Any] = {}
        self._last = 0.0

    @staticmethod
    def _bar() -> Any:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        return Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err.console,
            transient=False,
        )

    def __enter__(self) -> _RunProgress:
        if self.enabled:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()

    def update(self, p: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        finished = p.total is not None and p.done >= p.total
        if now - self._last < 0.1 and not finished:
            return
        self._last = now
        if p.phase not in self.tasks:
            self.tasks[p.phase] = self.bar.add_task(p.phase, total=None, rate="")
        elapsed = max(now - p.started, 1e-6)
        self.bar.update(
            self.tasks[p.phase],
            completed=p.done,
            total=p.total,
            rate=f"{p.done / elapsed:,.0f}/s",
        )


@main.command()
@click.argument("job", type=click.Path(exists=False, path_type=Path))
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    help="Sandboxed local workers (default: CPU count).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(path_type=Path),
    help="Results: a folder, or a path ending in .tar.gz.",
)
@common_options
@handle_errors
def run(
    job: Path, workers: int | None, out: Path | None, home: Path | None, as_json: bool, verbose: int
) -> None:
    """Run JOB on this machine with local sandboxed workers (no network, no daemon)."""
    from octop2p.engine._forkstart import start_server

    # The sandbox's fork server boots on the other core from here on, while the job is
    # read and trio and the engine load; it forks the job's first child as soon as it
    # can (a head start), so the job starts meanwhile.
    fork_server = start_server()
    try:
        from octop2p.cli._out import check_job_path
        from octop2p.engine._headstart import head_start, local_workers
        from octop2p.engine._package import prepare

        _setup_logging(verbose)
        check_job_path(job, out)
        spec = prepare(job)
        workers = local_workers(workers)
        layers = head_start(fork_server, spec, workers)
        from octop2p._home import Home

        # The results' manifest is signed by this home's node (made if it has none),
        # once the job is done: loading keys and crypto costs nothing before it starts.
        the_home = Home.locate(home)
    except BaseException:
        fork_server.close()
        raise
    import trio

    from octop2p.engine._local import run_local

    for warning in spec.warnings:
        err.print(f"[yellow]warning:[/] {warning}")

    def on_output(where: str, text: str) -> None:
        if where == "final":
            if not as_json:
                sys.stdout.write(text)
                sys.stdout.flush()
        else:
            for line in text.rstrip("\n").splitlines():
                err.print(f"[dim]{where}:[/] {line}", markup=True, highlight=False)

    with _RunProgress(enabled=True) as progress:
        result = trio.run(
            functools.partial(
                run_local,
                spec,
                workers=workers,
                out=out,
                on_progress=progress.update,
                on_output=on_output,
                identity=the_home.load_or_create_identity,
                fork_server=fork_server,
                layers=layers,
            )
        )
    err.tagged("done", "green", f"{result.name} in {result.seconds:.2f} s; results in {result.out}")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "job": result.job_id,
                    "name": result.name,
                    "state": "done",
                    "results": str(result.out),
                    "fragments": result.fragments,
                    "seconds": round(result.seconds, 3),
                    "workers": result.workers,
                }
            )
        )


@main.command()
@common_options
@handle_errors
def doctor(home: Path | None, as_json: bool, verbose: int) -> None:
    """Sandbox layers, whether this node would donate, its port and network interfaces."""
    from octop2p._doctor import examine
    from octop2p._home import Home

    _setup_logging(verbose)
    report = examine(Home.locate(home))
    if as_json:
        click.echo(json.dumps(report.to_json()))
        return
    from rich.console import Console

    out = Console(highlight=False, soft_wrap=True)  # the report is the result: stdout
    out.print("[bold]sandbox layers[/]")
    out.print(f"  {'STATE':4} {'LAYER':9} DETAIL")
    for name, st in report.sandbox.items():
        mark = "[green]ok [/]" if st.available else "[red]off[/]"
        out.print(f"  {mark}  {name:9} {st.detail}")
    verdict = "[green]yes[/]" if report.donate_ok else "[red]no[/]"
    switched = "on" if report.donate else "off (`octop2p node --donate`, or donate = true)"
    out.print(f"[bold]would donate[/]  {verdict}: {report.donate_reason()}")
    out.print(f"[bold]donation[/]      {switched}")
    port = report.port or "any free port"
    out.print(
        f"[bold]listens on[/]    {report.listen_host}:{port} "
        f"(listen_host, listen_port in {report.home / 'config.toml'})"
    )
    out.print("[bold]interfaces[/]")
    out.print(f"  {'INDEX':>5}  {'NAME':<12} ADDRESSES")
    for interface in report.interfaces:
        addresses = ", ".join(interface.addresses) or "no address"
        out.print(f"  {interface.index:>5}  {interface.name:<12} {addresses}")
    for damaged in report.damaged_jobs:  # listed by `octop2p jobs` too, with its results
        out.print(f"[yellow]damaged job record[/] {damaged}")


def _register_node_commands() -> None:
    from octop2p.cli._net import register

    register(main, common_options, handle_errors, err, _setup_logging, _RunProgress)


_register_node_commands()


def _register_trust_commands() -> None:
    from octop2p.cli import _blocked, _verify

    _verify.register(main, common_options, handle_errors, err, _setup_logging)
    _blocked.register(main, common_options, handle_errors, err, _setup_logging)


_register_trust_commands()


def _register_gui_command() -> None:
    # The desktop app's package is imported only when the command runs, so that every
    # other command works on machines without PySide6.
    @main.command()
    @click.option(
        "--screenshot",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Start, let the window settle, save it as PNG at this path and quit.",
    )
    @click.option("--hidden", is_flag=True, help="Start in the tray (minimized without one).")
    @click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="OCTOP2P_HOME",
        help="The node's state folder. Env: OCTOP2P_HOME.",
    )
    @click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv: debug).")
    @handle_errors
    def gui(screenshot: Path | None, hidden: bool, home: Path | None, verbose: int) -> None:
        """The desktop app: attaches to the node running in the home, or runs one."""
        import importlib.util

        from octop2p.errors import UsageError

        # Qt stays in gui/: look for PySide6 without importing it here.
        if importlib.util.find_spec("PySide6") is None:
            raise UsageError("the desktop app needs PySide6: pip install 'octop2p[gui]'")
        try:
            from gui import main as run_gui
        except ImportError as exc:
            raise UsageError(
                f"the desktop app cannot start ({exc}): pip install 'octop2p[gui]'"
            ) from None
        sys.exit(run_gui(home, screenshot=screenshot, hidden=hidden, verbose=verbose))


_register_gui_command()
