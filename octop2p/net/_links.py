"""A node's links to its peers: dialling (static peers, with backoff; peers seen on the
LAN), accepting, the handshake's admission, one link per peer, and what the node says
of itself on them (``Hello``, donation changes).

:class:`PeerLinks` is a mixin of :class:`~octop2p.net._node.Node`, as
:class:`~octop2p.net._routes.MessageRoutes` is: it holds the link table and the tasks
that fill it, and hands every message of an open link to the routes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

import octop2p
from octop2p.errors import OctoError
from octop2p.net._advert import PeerEvent, PeerSeen, swarm_tag
from octop2p.net._peer import LinkClosed, PeerLink
from protocol import (
    COMPRESSION,
    Connection,
    Heartbeat,
    Hello,
    JobCode,
    Message,
    NodeId,
    NodeIdentity,
    Role,
    SwarmCode,
)

if TYPE_CHECKING:
    from octop2p.net._admission import Admission
    from octop2p.net._donor import WorkerService
    from octop2p.net._node import NodeSettings

# The node's own log, where its owner has always found these lines.
log = logging.getLogger("octop2p.net._node")

DIAL_BACKOFF = (0.5, 1, 2, 5, 10, 30)
MAX_DISCOVERY_DIALS = 8


class PeerLinks:
    """The links of :class:`~octop2p.net._node.Node` (a mixin; see the module docstring)."""

    # What the node sets up (``Node.__init__``, ``Node.serve``).
    id: NodeId
    identity: NodeIdentity
    swarm: SwarmCode | None
    job_code: JobCode | None
    pinned: Any
    settings: NodeSettings
    admission: Admission
    worker: WorkerService
    jobs: dict[bytes, Any]
    home: Any
    donating: bool
    cores: int
    port: int
    layers: frozenset[str]
    _links: dict[str, PeerLink]
    _dialing: set[tuple[str, int]]
    _nursery: trio.Nursery | None
    _on_message: Callable[[PeerLink, Message], Awaitable[None]]

    def emit(self, kind: str, **fields: Any) -> None:
        """Publish a node event (the node's own ``emit``)."""
        raise NotImplementedError

    def links(self) -> list[PeerLink]:
        """Every open link."""
        return list(self._links.values())

    def _connection(self, role: Role) -> Connection:
        if role is Role.INITIATOR:
            if self.swarm is None and self.job_code is None:
                raise OctoError(
                    "this node is in no swarm: run `octop2p swarm create` or "
                    "`octop2p swarm join CODE` first"
                )
            if self.swarm is not None:
                return Connection(
                    role, self.identity, swarm_secret=self.swarm.secret, pinned=self.pinned
                )
            return Connection(role, self.identity, job_code=self.job_code, pinned=self.pinned)
        return Connection(
            role,
            self.identity,
            swarm_secret=self.swarm.secret if self.swarm else None,
            job_code=self.admission.job_code(),
            pinned=self.pinned,
        )

    async def _accept(self, stream: trio.SocketStream) -> None:
        address = _address(stream)
        try:
            conn = self._connection(Role.RESPONDER)
        except Exception as exc:  # noqa: BLE001 - a misconfigured node refuses everyone
            log.debug("refusing %s: %s", address, exc)
            await stream.aclose()
            return
        await self._run_link(PeerLink(stream, conn, address))

    async def connect(self, host: str, port: int) -> PeerLink:
        """Dial a peer and complete the handshake; returns the link once it is registered."""
        stream = await trio.open_tcp_stream(host, port)
        link = PeerLink(stream, self._connection(Role.INITIATOR), f"{host}:{port}")
        await link.open()
        assert self._nursery is not None
        self._nursery.start_soon(self._serve_opened, link)
        return link

    async def _dial_once(self, host: str, port: int) -> None:
        self._dialing.add((host, port))
        try:
            with trio.move_on_after(15):
                await self.connect(host, port)
        except (OSError, LinkClosed, OctoError) as exc:
            log.info("could not reach %s:%d: %s", host, port, exc)
        finally:
            self._dialing.discard((host, port))

    async def _dial_loop(self, host: str, port: int) -> None:
        """Keep a link to a static peer (``--peer``), redialling with backoff."""
        attempt = 0
        while True:
            try:
                link = await self.connect(host, port)
                attempt = 0
                await link.closed_event.wait()
            except (OSError, LinkClosed, OctoError) as exc:
                log.info("static peer %s:%d: %s", host, port, exc)
            await trio.sleep(DIAL_BACKOFF[min(attempt, len(DIAL_BACKOFF) - 1)])
            attempt += 1

    async def _run_link(self, link: PeerLink) -> None:
        await self.admission.begin(link, link.address.rpartition(":")[0])
        try:
            await link.open(gate=self.admission.gate, limiter=self.admission.threads)
        except LinkClosed as exc:
            log.info("refused a connection from %s: %s", link.address, exc)
            return
        finally:
            self.admission.end(link)
        await self._serve_opened(link)

    async def _serve_opened(self, link: PeerLink) -> None:
        peer = link.peer_id
        old = self._links.get(peer)
        if old is not None:
            # Both sides dialled at once: keep the link the smaller id initiated.
            keep_new = self._initiator(link) < self._initiator(old)
            if not keep_new:
                await link.aclose("duplicate")
                return
            await old.aclose("duplicate")
        if self.home is not None and self.swarm is not None and link.handshake is not None:
            try:
                await trio.to_thread.run_sync(
                    self.home.pin, link.handshake.peer_id, link.public_key
                )
            except OctoError as exc:  # another key for a pinned id: refuse the link
                log.warning("refusing peer %s: %s", link.short, exc)
                await link.aclose("pin conflict")
                return
        self._links[peer] = link
        link.local_donating = lambda: self.donating  # type: ignore[method-assign]
        link.local_free_cores = lambda: self.cores if self.donating else 0  # type: ignore[method-assign]
        self.emit("peer", id=peer, up=True, address=link.address)
        try:
            await link.run(self._on_message, self._hello())
        finally:
            if self._links.get(peer) is link:
                del self._links[peer]
                self.emit("peer", id=peer, up=False, address=link.address)
            self.worker.lost(link)
            for job in self.jobs.values():
                job.lost(link)

    def _initiator(self, link: PeerLink) -> str:
        return str(self.id) if link.conn.role is Role.INITIATOR else link.peer_id

    def _hello(self) -> Hello:
        return Hello(
            name=self.settings.name[:64],
            software=f"octop2p {octop2p.__version__}",
            cores=self.cores,
            donating=self.donating,
            sandbox=tuple(sorted(self.layers)),
            listen_port=self.port,
            features=(COMPRESSION,),  # large blobs to this node may come deflated
        )

    def announce_soon(self) -> None:
        """Tell every peer this node's donation state now, not at the next heartbeat."""
        if self._nursery is not None:
            self._nursery.start_soon(self._announce)

    async def _announce(self) -> None:
        for link in self.links():
            try:
                await link.send(
                    Heartbeat(
                        seq=0, donating=self.donating, free_cores=self.cores if self.donating else 0
                    )
                )
            except LinkClosed:
                pass

    def _on_discovery(self, event: PeerEvent) -> None:
        """A LAN advert: dial a member of this node's swarm not linked yet."""
        if not isinstance(event, PeerSeen) or event.node_id == self.id:
            return
        if self.swarm is None or event.swarm_tag != swarm_tag(self.swarm.swarm_id):
            return  # another swarm (or none): nothing to talk about
        peer = str(event.node_id)
        if peer in self._links or not event.addresses or self._nursery is None:
            return
        address = (event.addresses[0], event.port)
        # Adverts are unauthenticated: anyone on the LAN can claim our swarm tag and name
        # an address. Dial each address once at a time, and only a few at once.
        if address not in self._dialing and len(self._dialing) < MAX_DISCOVERY_DIALS:
            self._nursery.start_soon(self._dial_once, *address)


def _address(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except OSError:
        return "?"


def listen_address(link: PeerLink) -> str:
    """Where a peer accepts links: for one that dialled us, its host and the port its
    Hello names, not the ephemeral source port of its connection."""
    if link.conn.role is Role.RESPONDER and link.hello is not None and link.hello.listen_port:
        host = link.address.rpartition(":")[0]
        return f"{host}:{link.hello.listen_port}"
    return link.address
