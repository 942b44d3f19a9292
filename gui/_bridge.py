"""NodeBridge: the one object between the widgets and the node API (Electrum's model).

The bridge runs trio tasks (on the GUI thread, in guest mode) that call the node API and
listen to its events, and re-emits what it learns as Qt signals. Widgets call its plain
methods (``submit``, ``set_donate``...), which start trio tasks and return at once;
results come back as signals. All decisions live here or below (`_power.decide`,
`_store.JobBook`); widgets only show what the signals carry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio
from PySide6.QtCore import QObject, Signal

from octop2p.api import Config, Home, deliver_bytes, load_job, set_keys
from octop2p.errors import JobRefused, NoNodeError, OctoError
from protocol import CodeError, SwarmCode

from ._host import NodeHandle, open_node
from ._power import Decision, IdleMonitor, PowerState, decide, read_power
from ._settings import NODE_KEYS, GuiSettings
from ._store import JobBook, JobView

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
POLICY_SECONDS = 2.0
RETRY_SECONDS = 2.0
FLUSH_SECONDS = 0.1  # progress events arrive in bursts: redraw at most ten times a second

Spawn = Callable[..., None]
# What talking to a node can raise: its own errors, and a node that went away mid-call.
NODE_ERRORS = (OctoError, OSError, EOFError, trio.BrokenResourceError,
               trio.ClosedResourceError)


@dataclass(frozen=True)
class DonationView:
    """Everything the donate panel shows."""

    settings: GuiSettings
    decision: Decision
    node_donating: bool
    node_cores: int
    power: PowerState
    idle_source: str
    idle_available: bool
    error: str = ""  # why the node refused the last change, if it did


class NodeBridge(QObject):
    """The node, as the widgets see it (see the module docstring)."""

    connected = Signal(dict)  # node info, plus "mode" and "home"
    disconnected = Signal(str)  # why; the bridge keeps retrying
    info_changed = Signal(dict)
    peers_changed = Signal(list)
    jobs_changed = Signal()
    running_changed = Signal(list)
    donation_changed = Signal(object)  # DonationView
    validated = Signal(str, dict)  # path, report (see validate())
    submitted = Signal(str, dict)  # path, job status
    submit_failed = Signal(str, dict)  # path, report
    results_ready = Signal(str, str)  # job id, folder
    open_folder = Signal(str)
    notify = Signal(str, str, str)  # title, message, kind (done / failed / cancelled)
    node_event = Signal(dict)  # every node event, for the log view
    error = Signal(str)  # a command failed; shown in the status bar

    def __init__(self, home: Home, spawn: Spawn, *, idle: IdleMonitor | None = None,
                 power_root: Path | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.home = home
        self._spawn = spawn
        self.settings = GuiSettings.load(home, _config_or_none(home))
        self.idle = idle or IdleMonitor(None, "not checked")
        self._power_root = power_root
        self.book = JobBook()
        self.handle: NodeHandle | None = None
        self.info: dict[str, Any] = {}
        self.peers: list[dict[str, Any]] = []
        self.running: list[dict[str, Any]] = []
        self.ready = False  # connected and loaded once
        self._restart: trio.Event | None = None
        self._restart_asked = False  # the app restarts its node (a new swarm): no delay
        self._dirty = False
        self._applied: tuple[bool, int] | None = None  # the donation last set on the node
        self._refused: tuple[bool, int] | None = None  # a change the node refused
        self._donate_error = ""
        self._last_view: DonationView | None = None
        self._announced: set[str] = set()  # finished jobs already notified

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect (attach or start a node), follow it, reconnect if it goes; never ends."""
        while True:
            self._restart = trio.Event()
            self._restart_asked = False
            decision = self._decide()
            try:
                async with open_node(self.home, donate=decision.on, cores=decision.cores,
                                     cpu_percent=self.settings.cpu_percent) as handle:
                    self.handle = handle
                    async with trio.open_nursery() as nursery:
                        await self._load(handle)
                        nursery.start_soon(self._follow_events, handle, self._restart)
                        nursery.start_soon(self._poll)
                        nursery.start_soon(self._policy_loop)
                        nursery.start_soon(self._flush_loop)
                        await self._restart.wait()
                        nursery.cancel_scope.cancel()
            except Exception as exc:  # noqa: BLE001 - the app stays up and tries again
                reason = _describe(exc)
                log.warning("no node: %s", reason, exc_info=not _expected(exc))
                self.disconnected.emit(reason)
            finally:
                self.handle, self.ready = None, False
            if not self._restart_asked:
                await trio.sleep(RETRY_SECONDS)  # the node failed or went: do not spin

    async def _load(self, handle: NodeHandle) -> None:
        info = await handle.api.call("info")
        if not handle.in_process:
            # A separate `octop2p node`: the app shows that node's real donation and
            # never widens it on its own (consent is the owner's, given to that node).
            self.settings = replace(self.settings, donate=bool(info["donating"]),
                                    cores=max(1, int(info["cores"])))
        self._applied = (bool(info["donating"]), int(info["cores"]))
        self._set_info(info)
        self.connected.emit({**info, "mode": handle.mode, "home": str(self.home.path)})
        for event in await handle.api.call("recent_events"):
            self._on_event(event, replay=True)  # history for the log and the charts
        await self._refresh(handle)
        # Jobs that ended before the app came up are history, not news.
        self._announced |= {j.id for j in self.book.jobs.values() if j.is_finished}
        self.ready = True
        self._emit_donation()

    async def _follow_events(self, handle: NodeHandle, restart: trio.Event) -> None:
        try:
            async for event in handle.api.events():
                self._on_event(event)
        except NODE_ERRORS as exc:
            log.info("node event stream ended: %s", exc)
        # The stream ends only when a separate node stops: look for a node again.
        self.disconnected.emit("the node stopped")
        restart.set()

    async def _poll(self) -> None:
        assert self.handle is not None
        handle = self.handle
        while True:
            await trio.sleep(POLL_SECONDS)
            try:
                await self._refresh(handle)
            except NODE_ERRORS as exc:
                self.disconnected.emit(str(exc))
                if self._restart is not None:
                    self._restart.set()
                return

    async def _refresh(self, handle: NodeHandle) -> None:
        """Ask the node for everything that changes without an event."""
        self._set_info(await handle.api.call("info"))
        peers = await handle.api.call("peers")
        if peers != self.peers:
            self.peers = peers
            self.peers_changed.emit(peers)
        running = await handle.api.call("running")
        if running != self.running:
            self.running = running
            self.running_changed.emit(running)
        self.book.apply_statuses(await handle.api.call("status"))
        self._dirty = True
        if self.ready:
            self._check_finished()

    async def _flush_loop(self) -> None:
        while True:
            await trio.sleep(FLUSH_SECONDS)
            if self._dirty:
                self._dirty = False
                self.jobs_changed.emit()

    def _set_info(self, info: dict[str, Any]) -> None:
        if info != self.info:
            self.info = info
            self.info_changed.emit(info)

    # --- events --------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any], *, replay: bool = False) -> None:
        self.node_event.emit(event)
        kind = event.get("event")
        job = self.book.apply_event(event, str(self.info.get("id", "")))
        if job is not None:
            self._dirty = True
            if kind == "job" and not replay:
                self._check_finished()
        elif kind == "donating":
            self._applied = (bool(event.get("on")), int(event.get("cores") or 1))
            self.info = {**self.info, "donating": event.get("on"), "cores": event.get("cores")}
            self.info_changed.emit(self.info)
            self._emit_donation()

    def _check_finished(self) -> None:
        """Announce each job that has ended, once (from an event or, if the event was
        missed, from polling)."""
        for job in self.book.jobs.values():
            if job.is_finished and job.id not in self._announced:
                self._announced.add(job.id)
                self._job_finished(job)

    def _job_finished(self, job: JobView) -> None:
        titles = {"done": "Job finished", "failed": "Job failed", "cancelled": "Job cancelled"}
        body = f"{job.name} ({job.id[:8]})"
        if job.state == "failed" and job.error:
            body += f": {job.error.splitlines()[0][:200]}"
        self.notify.emit(titles.get(job.state, "Job ended"), body, job.state)
        if job.state == "done" and job.submitted_here:
            self._spawn(self._command, self._fetch, job.id, False)

    # --- commands (called by widgets; each runs as a trio task) --------------------------

    async def _command(self, fn: Callable[..., Awaitable[object]], *args: Any) -> None:
        """Run one command; a failure is reported, never raised into the trio run."""
        try:
            await fn(*args)
        except NODE_ERRORS as exc:
            log.warning("%s failed: %s", getattr(fn, "__name__", "command"), exc)
            self.error.emit(str(exc))

    def _api(self) -> Any:
        if self.handle is None:
            raise NoNodeError("the app is not connected to a node yet")
        return self.handle.api

    def refresh(self) -> None:
        """Ask the node for its state now."""
        if self.handle is not None:
            self._spawn(self._command, self._refresh, self.handle)

    def validate(self, path: str) -> None:
        """Check a job without running it; emits ``validated(path, report)``.

        The report has ``ok``; if true, ``kind``, ``name``, ``files``, ``warnings``;
        if false, ``rule``, ``file``, ``line``, ``detail``, ``message`` and ``excerpt``
        (the lines around the offending one, as (number, text) pairs).
        """
        self._spawn(self._validate, path)

    async def _validate(self, path: str) -> None:
        config = _config_or_none(self.home)
        limits = config.limits if config is not None else Config().limits
        try:
            spec = await trio.to_thread.run_sync(load_job, Path(path), limits)
        except JobRefused as exc:
            self.validated.emit(path, refusal(exc, Path(path)))
            return
        except OSError as exc:
            self.validated.emit(path, {"ok": False, "message": str(exc), "rule": "job path",
                                       "file": path, "line": None, "detail": str(exc),
                                       "excerpt": []})
            return
        self.validated.emit(path, {"ok": True, "kind": spec.kind, "name": spec.options.name,
                                   "files": list(spec.files), "warnings": list(spec.warnings)})

    def submit(self, path: str) -> None:
        """Submit a job to the node; emits ``submitted`` or ``submit_failed``."""
        self._spawn(self._submit, str(Path(path).resolve()))

    async def _submit(self, path: str) -> None:
        try:
            status = await self._api().call("submit", path=path)
        except JobRefused as exc:
            self.submit_failed.emit(path, refusal(exc, Path(path)))
            return
        except NODE_ERRORS as exc:
            self.submit_failed.emit(path, {"ok": False, "message": str(exc), "rule": None,
                                           "file": None, "line": None, "detail": str(exc),
                                           "excerpt": []})
            return
        job = self.book.get(status["job"])
        job.submitted_here = True
        job.apply_status(status)
        if job.started is None:
            job.started = time.time()
        self.jobs_changed.emit()
        self.submitted.emit(path, status)

    def cancel(self, job_id: str) -> None:
        """Stop a job of this node."""
        self._spawn(self._command, self._cancel, job_id)

    async def _cancel(self, job_id: str) -> None:
        self.book.get(job_id).apply_status(await self._api().call("cancel", job=job_id))
        self.jobs_changed.emit()

    def open_results(self, job_id: str) -> None:
        """Fetch a finished job's results if needed; emits ``open_folder(path)``."""
        self._spawn(self._command, self._fetch, job_id, True)

    async def _fetch(self, job_id: str, then_open: bool) -> None:
        job = self.book.get(job_id)
        if job.results_path is None or not job.results_path.is_dir():
            results = await self._api().call("results", job=job_id)
            out = Path(self.settings.results_dir).expanduser() / f"{results['name']}-{job_id[:8]}"
            out.parent.mkdir(parents=True, exist_ok=True)
            job.results_path = await trio.to_thread.run_sync(
                lambda: deliver_bytes(results["tarball"], out, job_name=results["name"],
                                      job_id=job_id, max_bytes=results.get("max_bytes")))
            log.info("results of %s in %s", results["name"], job.results_path)
            self.results_ready.emit(job_id, str(job.results_path))
            self.jobs_changed.emit()
        if then_open:
            self.open_folder.emit(str(job.results_path))

    # --- swarm ---------------------------------------------------------------------------

    def swarm_code(self) -> str | None:
        """The join code of this node's swarm, or None."""
        code = self.home.swarm()
        return str(code) if code is not None else None

    def create_swarm(self) -> str:
        """Make a new swarm, join it, restart the app's node in it; returns the join code."""
        code = SwarmCode.generate()
        self.home.save_swarm(code)
        self._swarm_changed()
        return str(code)

    @staticmethod
    def check_code(text: str) -> str | None:
        """Why ``text`` is not a join code, or None if it is one."""
        try:
            SwarmCode.parse(text.strip())
        except CodeError as exc:
            return str(exc)
        return None

    def join_swarm(self, text: str) -> None:
        """Join the swarm of a join code (check it first with ``check_code``)."""
        self.home.save_swarm(SwarmCode.parse(text.strip()))
        self._swarm_changed()

    @property
    def needs_restart_for_swarm(self) -> bool:
        """True when the node is a separate process that must be restarted by hand."""
        return self.handle is not None and not self.handle.in_process

    def _swarm_changed(self) -> None:
        if self.handle is not None and self.handle.in_process:
            self._spawn(self._restart_node)

    async def _restart_node(self) -> None:
        if self._restart is not None:
            self._restart_asked = True
            self._restart.set()

    # --- donation ------------------------------------------------------------------------

    def set_donation(self, **changes: Any) -> None:
        """The owner changed a donation setting (``donate``, ``cores``, ``cpu_percent``,
        ``idle_only``, ``idle_minutes``, ``pause_on_battery``): save it, apply it now."""
        self.save_settings(**changes)
        node_changes = {k: getattr(self.settings, k) for k in changes if k in NODE_KEYS}
        if node_changes:
            # The owner's choice is the node's setting: config.toml, where `octop2p node`
            # reads it too.
            try:
                set_keys(self.home, **node_changes)
            except (OSError, OctoError) as exc:
                self.error.emit(f"could not save the settings: {exc}")
        self._refused = None
        self._donate_error = ""
        self._spawn(self._apply_policy)

    def save_settings(self, **changes: Any) -> None:
        """Change and save the app's settings (gui.toml)."""
        self.settings = self.settings.updated(changes)
        try:
            self.settings.save(self.home)
        except OSError as exc:
            self.error.emit(f"could not save the settings: {exc}")

    def _decide(self) -> Decision:
        idle = self.idle.idle_seconds() if self.settings.idle_only else None
        return decide(self.settings, idle_seconds=idle, on_battery=self._power().on_battery)

    def _power(self) -> PowerState:
        return read_power(self._power_root) if self._power_root else read_power()

    async def _policy_loop(self) -> None:
        while True:
            await self._apply_policy()
            await trio.sleep(POLICY_SECONDS)

    async def _apply_policy(self) -> None:
        if self.handle is None:
            self._emit_donation()
            return
        decision = self._decide()
        wanted = (decision.on, decision.cores)
        if wanted != self._applied and wanted != self._refused:
            try:
                info = await self.handle.api.call("donate", on=decision.on, cores=decision.cores,
                                                  by=f"the app ({decision.reason.lower()})")
            except OctoError as exc:
                # The node refused (it lacks sandbox layers): say why, and do not retry
                # the same change every few seconds.
                self._refused, self._donate_error = wanted, str(exc)
                if decision.on:
                    self.settings = replace(self.settings, donate=False)
            else:
                self._applied = (bool(info["donating"]), int(info["cores"]))
                self._set_info(info)
        self._emit_donation(decision)

    def _emit_donation(self, decision: Decision | None = None) -> None:
        view = DonationView(
            settings=self.settings, decision=decision or self._decide(),
            node_donating=bool(self.info.get("donating")),
            node_cores=int(self.info.get("cores") or self.settings.cores),
            power=self._power(), idle_source=self.idle.source,
            idle_available=self.idle.available, error=self._donate_error)
        if view != self._last_view:
            self._last_view = view
            self.donation_changed.emit(view)


def refusal(exc: JobRefused, job: Path) -> dict[str, Any]:
    """A `JobRefused` as a report for the submit dialog, with the offending lines."""
    return {"ok": False, "rule": exc.rule, "file": exc.file, "line": exc.line,
            "detail": exc.detail, "message": str(exc), "excerpt": _excerpt(job, exc)}


def _excerpt(job: Path, exc: JobRefused, context: int = 2) -> list[tuple[int, str]]:
    if not exc.file or not exc.line:
        return []
    file = Path(exc.file)
    if not file.is_absolute():
        file = (job if job.is_dir() else job.parent) / file
    try:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    first = max(1, exc.line - context)
    return [(n, lines[n - 1]) for n in range(first, min(len(lines), exc.line + context) + 1)]


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _expected(exc: BaseException) -> bool:
    """True if every error inside ``exc`` is one a node can cause (not a bug here)."""
    return all(isinstance(leaf, NODE_ERRORS) for leaf in _leaves(exc))


def _describe(exc: BaseException) -> str:
    """The message of the first error inside ``exc`` (nurseries wrap them in groups)."""
    leaf = _leaves(exc)[0]
    return str(leaf) or type(leaf).__name__


def _config_or_none(home: Home) -> Config | None:
    try:
        return Config.load(home)
    except OctoError as exc:
        log.warning("config.toml: %s", exc)
        return None


__all__ = ["DonationView", "NodeBridge", "refusal"]
