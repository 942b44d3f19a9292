"""`octop2p submit`: hand a job to the node, say what it waits for, show its progress and
prints as `octop2p run` does, deliver its results. Imported only when the command runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import trio

from octop2p._config import Config
from octop2p._home import Home
from octop2p.api import FINISHED, NodeAPI, no_worker_reason
from octop2p.cli._nodes import node_api
from octop2p.cli._out import DOCS_SWARM
from octop2p.engine._results import default_out, deliver_bytes
from octop2p.errors import JobFailed, NoNodeError
from octop2p.net._control import ControlClient

FIRST_CHECK = 0.3  # "within a second" the user hears what the job waits for
RECHECK = 2.0
REDIAL = 0.5  # how often a lost node's control socket is tried again
#: After the job's end, how long `submit` waits for the events that preceded it (the
#: job's last prints) to come through the node's event stream.
ENDED_SECONDS = 2.0


class Submission:
    """What `submit` knows so far, for a Ctrl-C that comes at any moment."""

    def __init__(self) -> None:
        self.job: str | None = None
        self.name = ""
        self.temporary = False


def say_where(job: str) -> str:
    """The commands that reach a job after `submit` has ended."""
    return f"`octop2p status {job}`, `octop2p fetch {job}`, `octop2p cancel {job}`"


async def submit(
    home: Home,
    job: Path,
    chief: str | None,
    no_wait: bool,
    out: Path | None,
    err: Any,
    progress_cls: Any,
    sub: Submission,
    as_json: bool = False,
) -> dict[str, Any]:
    """Submit and (unless ``no_wait``) follow ``job``; returns the `--json` object.

    With ``as_json`` what `final` prints stays off stdout (it is in output.txt), as
    with `octop2p run --json`: stdout holds the one JSON object.
    """
    async with node_api(home) as api:
        sub.temporary = isinstance(api, NodeAPI)
        if chief is not None:
            await _find_chief(api, chief, err)
        async with trio.open_nursery() as nursery:
            printer = _Printer(err, quiet_final=as_json)
            # Listen before submitting: the splitter prints within milliseconds.
            await nursery.start(printer.follow, api)
            status = await api.call("submit", path=str(job), chief=chief)
            sub.job, sub.name = status["job"], status["name"]
            printer.job = sub.job
            where = "a temporary node (it stops with this command)" if sub.temporary else (
                f"node {chief}" if chief else "the local node")
            err.print(f"submitted {sub.name} as job {sub.job} to {where}")
            for warning in status.get("warnings") or ():
                err.print(f"[yellow]warning:[/] {warning}")
            if no_wait:
                err.print(f"follow it with {say_where(sub.job)}")
                nursery.cancel_scope.cancel()
                return {"job": sub.job, "name": sub.name, "state": status["state"]}
            with progress_cls(enabled=True) as progress:
                printer.progress = progress
                if chief is None:
                    nursery.start_soon(_say_waiting, api, sub.job, err)
                final = await _wait(api, home, sub.job, err, printer, nursery)
                with trio.move_on_after(ENDED_SECONDS):
                    await printer.ended.wait()  # the prints that came before the end
                nursery.cancel_scope.cancel()
        if final["state"] != "done":
            raise job_failed(final)
        path = await _deliver(api, sub.job, out)
    if chief is not None and not as_json and not printer.printed_final:
        # Another chief ran `final`: what it printed arrives in the results only.
        printed = path / "output.txt"
        if path.is_dir() and printed.is_file():
            sys.stdout.write(printed.read_text(encoding="utf-8"))
            sys.stdout.flush()
    seconds = (final["finished"] or time.time()) - (final["started"] or time.time())
    workers = ", ".join(f"{w[:7]} {n}" for w, n in final["workers"].items())
    err.tagged("done", "green", f"{final['name']} in {seconds:.2f} s; results in {path}"
               + (f" (workers: {workers})" if workers else ""))
    return {
        "job": sub.job,
        "name": final["name"],
        "state": final["state"],
        "results": str(path),
        "fragments": final["fragments_done"],
        "seconds": round(seconds, 3),
        "workers": final["workers"],
    }


async def _wait(api: Any, home: Home, job: str, err: Any, printer: _Printer,
                nursery: trio.Nursery) -> dict[str, Any]:
    """The job's final status. When the node's control socket closes (the node died or
    was restarted), wait for it to come back and follow the same job again."""
    node = str((await api.call("info"))["id"])[:7] if isinstance(api, ControlClient) else ""
    while True:
        try:
            return dict(await api.call("wait", job=job))
        except NoNodeError:
            if not node:  # a temporary node dies with this command: nothing to wait for
                raise
        if (await _reattach(api, home, job, node, err))["state"] in FINISHED:
            printer.ended.set()  # it ended while the node was away: no event will say so
        try:
            await nursery.start(printer.follow, api)
        except NoNodeError:
            pass  # gone again at once: the next `wait` says so


async def _reattach(api: Any, home: Home, job: str, node: str, err: Any) -> dict[str, Any]:
    """Say in one line that the node is lost, then try its control socket again until it
    knows ``job`` (its error, e.g. an unknown job, ends the command; else its status) or
    ``reattach_seconds`` (config.toml) pass."""
    seconds = Config.load(home).reattach_seconds
    err.print(f"[yellow]lost the node {node} (its control socket closed); waiting up to "
              f"{seconds} s for it to come back (reattach_seconds)[/]", highlight=False)
    with trio.move_on_after(seconds):
        while True:
            try:
                status = await api.call("status", job=job)
            except NoNodeError:
                await trio.sleep(REDIAL)
                continue
            err.print(f"node {node} is back; following job {job} again", highlight=False)
            return dict(status)
    raise NoNodeError(
        f"the node {node} did not come back within {seconds} s (reattach_seconds in "
        f"config.toml); once it runs again, {say_where(job)} reach the job")


async def _find_chief(api: Any, chief: str, err: Any, timeout: float = 10) -> None:
    """A temporary node needs a moment to find and link the chief named by --chief."""
    if str((await api.call("info"))["id"]).startswith(chief.upper()):
        return
    if isinstance(api, NodeAPI):
        err.print(f"looking for node {chief} in the swarm (up to {timeout:g} s)")
    with trio.move_on_after(timeout):
        while not any(
            p["id"].startswith(chief.upper()) and p["trusted"] for p in await api.call("peers")
        ):
            await trio.sleep(0.2)
        return
    raise NoNodeError(
        f"no peer {chief} in reach: `octop2p peers` lists the nodes this one is linked to"
    )


class _Printer:
    """Node events of one job, shown as `octop2p run` shows them: the progress bar, what
    `final` prints on stdout, every other print on stderr prefixed with its role."""

    def __init__(self, err: Any, quiet_final: bool = False) -> None:
        self.err = err
        self.quiet_final = quiet_final
        self.job: str | None = None
        self.progress: Any = None
        self.early: list[dict[str, Any]] = []  # events before the job's id was known
        self.printed_final = False  # what `final` printed reached stdout
        self.told: set[tuple[Any, Any]] = set()  # refusals shown (a donor repeats its own)
        self.ended = trio.Event()  # the job's last event was shown

    async def follow(self, api: Any, *, task_status: trio.TaskStatus[None]) -> None:
        from octop2p.engine._runner import Progress

        started = time.monotonic()
        events = api.events()
        first = await events.__anext__()  # "subscribed" (or an event: either way, listening)
        task_status.started()
        if first.get("event") != "subscribed":
            self.early.append(first)
        try:
            async for event in events:
                if self.job is None:
                    self.early.append(event)
                    continue
                for one in [*self.early, event]:
                    self._show(one, started, Progress)
                self.early.clear()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the node is gone: `_wait` says so, and follows it again once back

    def _show(self, event: dict[str, Any], started: float, progress_cls: Any) -> None:
        if event.get("job") != self.job:
            return
        kind = event.get("event")
        if kind == "output" and not (self.quiet_final and event.get("where") == "final"):
            _print_output(self.err, event.get("where", ""), event.get("text", ""))
            self.printed_final |= event.get("where") == "final"
        elif kind == "warning":
            self.err.print(f"[yellow]warning:[/] {event.get('text', '')}")
        elif kind == "notice":  # a remote job's link to its chief lost or back
            self.err.print(f"[yellow]{event.get('text', '')}[/]", markup=True, highlight=False)
        elif kind == "refused" and (event.get("donor"), event.get("reason")) not in self.told:
            self.told.add((event.get("donor"), event.get("reason")))
            self.err.print(f"[yellow]warning:[/] donor {event.get('donor')} refused the job: "
                           f"{event.get('reason')}", markup=True, highlight=False)
        elif kind == "job" and event.get("state") in FINISHED:
            self.ended.set()
        elif kind == "progress" and self.progress is not None:
            self.progress.update(progress_cls(
                phase=event["phase"], done=event["done"], total=event["total"],
                workers=event["workers"], started=started,
            ))


def _print_output(err: Any, where: str, text: str) -> None:
    if where == "final":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    for line in text.rstrip("\n").splitlines():
        err.print(f"[dim]{where}:[/] {line}", markup=True, highlight=False)


async def _say_waiting(api: Any, job: str, err: Any) -> None:
    """Say, within a second and whenever it changes, what the job is waiting for."""
    said = ""
    await trio.sleep(FIRST_CHECK)
    while True:
        try:
            status = await api.call("status", job=job)
            if status["state"] in FINISHED or status["fragments_done"]:
                return
            reason = status.get("waiting") or no_worker_reason(
                await api.call("info"), await api.call("peers")
            )
        except NoNodeError:
            return  # the node is gone: `_wait` says so

        if reason and reason != said:
            err.print(f"[yellow]waiting:[/] {reason} (see {DOCS_SWARM})")
        elif said and not reason:
            err.print("a worker is in reach now")
        said = reason
        await trio.sleep(RECHECK)


def job_failed(final: dict[str, Any]) -> JobFailed:
    """The node's report of a failed job, as the error to show (already worded in full)."""
    exc = JobFailed(final["error"] or f"the job ended {final['state']}", final.get("traceback", ""))
    exc.rule = final.get("rule")  # for --json; the message already names it
    exc.job = final["job"]
    return exc


async def _deliver(api: Any, job_id: str, out: Path | None) -> Path:
    """Fetch a finished job's results and write them to ``out``."""
    results = await api.call("results", job=job_id)
    return deliver_bytes(
        results["tarball"],
        out or default_out(results["name"]),
        job_name=results["name"],
        job_id=job_id,
        max_bytes=results.get("max_bytes"),
    )
