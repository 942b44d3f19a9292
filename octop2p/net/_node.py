"""The networked node: one trio nursery holding every service of one octop2p node.

Services (each started with ``nursery.start``): the sandbox fork server, a TCP listener,
mDNS discovery, dialers for static peers, the worker (while donating) and the jobs this
node is chief of. Peers talk only after a handshake inside the swarm (or with the
one-time job code of ``octop2p server``); every message is then routed here by type.
The node API (``submit``, ``jobs``, ``peers``, ``set_donating``, events) is what the
control socket, the CLI and the GUI use. Two mixins make up the rest of ``Node``: its
links to peers (``PeerLinks``, ``_links.py``) and the routing of their messages
(``MessageRoutes``, ``_routes.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import sandbox
from octop2p._config import parse_address
from octop2p.engine._children import ForkServer, open_fork_server
from octop2p.engine._limits import Limits
from octop2p.engine._package import load_job
from octop2p.errors import OctoError, UsageError
from octop2p.net import _discovery
from octop2p.net._admission import Admission
from octop2p.net._donor import WorkerService
from octop2p.net._handback import HANDOVER_SECONDS
from octop2p.net._hosted import ArchivedJob, JobRecord, JobStore, NetworkJob
from octop2p.net._links import PeerLinks, listen_address
from octop2p.net._peer import PeerLink, loopback
from octop2p.net._reputation import Reputation
from octop2p.net._resumed import resume_job
from octop2p.net._routes import MessageRoutes
from octop2p.net._store import evict_oldest
from octop2p.net._submitter import (
    evict_jobs,
    submit_remote,
)
from protocol import (
    CodeError,
    JobCode,
    NodeId,
    NodeIdentity,
    SwarmCode,
)

log = logging.getLogger(__name__)

EVENT_BACKLOG = 256


@dataclass(frozen=True)
class PeerView:
    """A peer as the node API shows it."""

    id: str
    address: str
    cores: int
    donating: bool
    trusted: bool
    name: str = ""
    connected: bool = True
    quarantined: bool = False  # caught returning wrong results: given no work
    reason: str = ""  # why it is quarantined


@dataclass
class NodeSettings:
    """How one node runs (built from Config and flags by the CLI)."""

    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    peers: tuple[str, ...] = ()
    discovery: bool = True
    discovery_interfaces: Any = None  # None: zeroconf's default (all interfaces)
    donate: bool = False
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    limits: Limits = field(default_factory=Limits)
    name: str = field(default_factory=socket.gethostname)
    # The chief's own cores count for its jobs only while it donates (docs/jobs.md); a temporary
    # node that `submit` starts runs its owner's job on its owner's cores.
    own_jobs_local: bool = False
    unconfined_trusted_swarm: bool = False
    state_dir: Path | None = None  # jobs/ and packages/ live here (a temp dir when None)
    packages_mb: int = 4096  # quota of packages/ (fetched as a donor), oldest evicted
    jobs_mb: int = 8192  # quota of jobs/ (jobs this node was chief of), oldest evicted
    block_after_breaches: int = 3  # a donor blocks a chief after this many breaches (0: never)
    block_hours: int = 24
    reattach_seconds: int = 600  # a remote job waits this long for a lost chief's link
    handover_seconds: int = HANDOVER_SECONDS  # a donor keeps a lost chief's work this long
    resume: bool = True  # take up the jobs a crash or a stop interrupted (`node --no-resume`)
    journal: bool = True  # keep each job's journal, so that it can be resumed


class Node(MessageRoutes, PeerLinks):
    """One octop2p node (see the module docstring)."""

    def __init__(
        self,
        identity: NodeIdentity,
        swarm: SwarmCode | None,
        settings: NodeSettings,
        *,
        job_code: JobCode | None = None,
        pinned: Any = None,
    ) -> None:
        self.identity = identity
        self.id = NodeId.from_public_key(identity.public_key)
        self.swarm = swarm
        self.settings = settings
        self.job_code = job_code
        self.pinned = pinned
        self.donating = settings.donate
        self.cores = settings.cores
        self.limits = settings.limits
        self.port = 0
        self.layers: frozenset[str] = frozenset()
        self.forkserver: ForkServer = None  # type: ignore[assignment]
        self.worker = WorkerService(self)
        self.jobs: dict[bytes, NetworkJob] = {}
        self._resumable: list[ArchivedJob] = []  # interrupted jobs to take up at start
        self._links: dict[str, PeerLink] = {}
        self._discovery: _discovery.Discovery | None = None
        self._dialing: set[tuple[str, int]] = set()
        self._subscribers: list[trio.MemorySendChannel[dict[str, Any]]] = []
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=EVENT_BACKLOG)
        self._nursery: trio.Nursery | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.started = trio.Event()
        self.home: Any = None  # the Home, when the node has one: members are pinned there
        self.reputation: Reputation = Reputation(None)  # read from the state folder at start
        self._reputation_lock = trio.Lock()
        self.admission = Admission(self)

    # --- running -------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every service until cancelled."""
        self._prepare_dirs()
        self.layers = self._layers()
        try:
            async with open_fork_server() as fs, trio.open_nursery() as nursery:
                self.forkserver = fs
                self._nursery = nursery
                listeners = await trio.open_tcp_listeners(
                    self.settings.listen_port, host=self.settings.listen_host or None
                )
                self.port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(trio.serve_listeners, self._accept, listeners)
                for peer in self.settings.peers:
                    nursery.start_soon(self._dial_loop, *parse_address(peer))
                if self.settings.discovery:
                    try:
                        self._discovery = await nursery.start(self._serve_discovery)
                    except OctoError as exc:
                        log.warning("LAN discovery is off: %s", exc)
                log.info(
                    "node %s listening on %s:%d (donating: %s)",
                    self.id.short,
                    self.settings.listen_host,
                    self.port,
                    self.donating,
                )
                for archived in self._resumable:
                    nursery.start_soon(resume_job, self, archived)
                self._resumable.clear()
                self.started.set()
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            if self._tmp is not None:
                self._tmp.cleanup()

    def _prepare_dirs(self) -> None:
        if self.settings.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="octop2p-node-")
            base = Path(self._tmp.name)
        else:
            base = self.settings.state_dir
        self.reputation = Reputation(base / "reputation.json")
        self.jobs_dir = base / "jobs"
        self.package_cache = base / "packages"
        for folder in (self.jobs_dir, self.package_cache):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        evict_oldest(self.jobs_dir, self.settings.jobs_mb << 20)
        evict_oldest(self.package_cache, self.settings.packages_mb << 20)
        # Jobs of earlier runs: still listed, shown and fetchable (results read on fetch).
        for folder in sorted(self.jobs_dir.iterdir(), key=lambda p: p.stat().st_mtime):
            archived = JobStore.load(folder, resume=self.settings.resume)
            if archived is not None:
                self.jobs[archived.job_id] = archived  # type: ignore[assignment]
                if archived.journal is not None:
                    self._resumable.append(archived)

    def _layers(self) -> frozenset[str]:
        status = sandbox.probe()
        available = frozenset(k for k, v in status.items() if v.available)
        missing = sandbox.ALL_LAYERS - available
        if missing and self.donating and not self.settings.unconfined_trusted_swarm:
            # Consent and safety: never run other people's code with fewer layers than
            # a donor expects, unless the owner said so explicitly.
            log.error(
                "sandbox layers missing here (%s): this node will not donate; see `octop2p doctor`",
                ", ".join(sorted(missing)),
            )
            self.donating = False
        if missing and self.settings.unconfined_trusted_swarm:
            log.warning(
                "UNCONFINED: unconfined_trusted_swarm is set; job code runs without "
                "the sandbox layers %s. Only for swarms whose every member you trust.",
                ", ".join(sorted(missing)),
            )
        return available

    async def _serve_discovery(self, *, task_status: trio.TaskStatus[Any]) -> None:
        interfaces = self.settings.discovery_interfaces
        if interfaces is None and loopback(self.settings.listen_host):
            # A node reachable only on loopback has nothing to announce to the LAN.
            interfaces = [self.settings.listen_host]
        await _discovery.serve(
            self._advert(),
            self._on_discovery,
            **({"interfaces": interfaces} if interfaces is not None else {}),
            task_status=task_status,
        )

    def _advert(self) -> _discovery.Advert:
        tag = _discovery.swarm_tag(self.swarm.swarm_id) if self.swarm else None
        return _discovery.Advert(
            node_id=self.id,
            port=self.port,
            cores=self.cores,
            donating=self.donating,
            name=self.settings.name,
            swarm_tag=tag,
        )

    # --- the node API --------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish an event to every subscriber (GUI, `submit` progress)."""
        event = {"event": kind, "time": time.time(), **fields}
        self.recent_events.append(event)
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                pass  # a slow subscriber misses events rather than stall the node
            except trio.BrokenResourceError:
                self._subscribers.remove(channel)

    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        """A channel of node events, from now on."""
        send, receive = trio.open_memory_channel[dict[str, Any]](EVENT_BACKLOG)
        self._subscribers.append(send)
        return receive

    def info(self) -> dict[str, Any]:
        """This node: id, port, donation, cores, swarm."""
        return {
            "id": str(self.id),
            "port": self.port,
            "donating": self.donating,
            "cores": self.cores,
            "layers": sorted(self.layers),
            "swarm": self.swarm.swarm_id.hex() if self.swarm else None,
            "name": self.settings.name,
        }

    def peers(self) -> list[PeerView]:
        """Peers linked now (trusted: they proved swarm membership in the handshake)."""
        out = [
            PeerView(
                id=link.peer_id,
                address=listen_address(link),
                cores=link.cores,
                donating=link.donating,
                trusted=True,
                name=link.hello.name if link.hello else "",
            )
            for link in self._links.values()
        ]
        if self._discovery is not None:
            linked = {p.id for p in out}
            for seen in self._discovery.peers():
                if str(seen.node_id) not in linked and seen.node_id != self.id:
                    out.append(
                        PeerView(
                            id=str(seen.node_id),
                            address=f"{seen.addresses[0] if seen.addresses else '?'}:{seen.port}",
                            cores=seen.cores,
                            donating=seen.donating,
                            trusted=False,
                            name=seen.name,
                            connected=False,
                        )
                    )
        return self._with_quarantine(out)

    def _with_quarantine(self, peers: list[PeerView]) -> list[PeerView]:
        """Mark quarantined peers, and list those not in sight as well."""
        shown = {p.id for p in peers}
        out = [dataclasses.replace(p, quarantined=True, reason=why)
               if (why := self.reputation.quarantined(p.id)) else p for p in peers]
        for node, entry in self.reputation.nodes.items():
            if entry["quarantined"] and node not in shown:
                out.append(PeerView(id=node, address="", cores=0, donating=False,
                                    trusted=False, connected=False, quarantined=True,
                                    reason=entry["quarantined"]))
        return out

    def local_slots(self) -> int:
        """Local worker slots for jobs this node is chief of."""
        return self.cores if (self.donating or self.settings.own_jobs_local) else 0

    def set_donating(self, on: bool, cores: int | None = None, by: str = "the owner") -> None:
        """The owner switched donation on or off (consent: off stops others' work now).

        ``by`` says who asked (the app, a command), for the log: the owner can see who
        changed what their machine gives.
        """
        if (
            on
            and not sandbox.ALL_LAYERS <= self.layers
            and not self.settings.unconfined_trusted_swarm
        ):
            raise OctoError(
                "this machine cannot apply every sandbox layer (see `octop2p "
                "doctor`), so it will not run other people's code"
            )
        if cores is not None and max(1, cores) != self.cores:
            log.info("cores changed from %d to %d by %s", self.cores, max(1, cores), by)
            self.cores = max(1, cores)
        if on != self.donating:
            log.info("donation switched %s by %s", "on" if on else "off", by)
        self.donating = on
        if not on:
            self.worker.stop_all()
        if self._discovery is not None:
            self._discovery.update(self._advert())
        self.emit("donating", on=on, cores=self.cores)
        if self._nursery is not None:
            self._nursery.start_soon(self._announce)

    def save_reputation(self) -> None:
        """Write the reputation file soon, off the event loop, one write at a time."""
        if self._nursery is not None:
            self._nursery.start_soon(self._save_reputation)

    async def _save_reputation(self) -> None:
        async with self._reputation_lock:
            try:
                await trio.to_thread.run_sync(self.reputation.save)
            except OSError as exc:  # a full disk costs the record, never the node
                log.warning("could not save what this node learnt of its workers: %s", exc)

    def forgive(self, node: str) -> bool:
        """Lift a quarantine the owner judged wrong; False if ``node`` had none."""
        lifted = self.reputation.forgive(node)
        if lifted:
            log.info("the owner forgave node %s: it may work for this node's jobs again", node)
            self.save_reputation()
        return lifted

    def spawn(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the node (it ends when the node stops)."""
        assert self._nursery is not None
        self._nursery.start_soon(fn, *args)

    async def submit(self, path: Path, chief: str | None = None) -> JobRecord:
        """Validate and start a job; this node is its chief unless ``chief`` names a peer.

        Raises JobRefused before anything runs.
        """
        if chief is not None:
            try:  # the whole id: a prefix could be matched by a ground key
                chief_id = NodeId.parse(chief)
            except CodeError as exc:
                raise UsageError(f"--chief needs a peer's full node id: {exc}") from None
            if chief_id != self.id:
                return (await submit_remote(self, path, str(chief_id))).record
        await evict_jobs(self)
        spec = await trio.to_thread.run_sync(load_job, path, self.limits)
        job = NetworkJob(self, spec)
        self.jobs[job.job_id] = job
        assert self._nursery is not None
        self._nursery.start_soon(job.run, self.jobs_dir / job.record.id_hex)
        return job.record

    def job(self, job_id: str) -> NetworkJob | None:
        """A job by its id (hex, or a unique prefix of it)."""
        matches = [j for j in self.jobs.values() if j.record.id_hex.startswith(job_id.lower())]
        return matches[0] if len(matches) == 1 else None

    def records(self) -> Iterator[JobRecord]:
        """Every job this node is chief of, oldest first."""
        return (job.record for job in self.jobs.values())
