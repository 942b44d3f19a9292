"""LAN discovery: advertise this node and browse for others with mDNS (python-zeroconf).

Each node registers one DNS-SD service of type `_octop2p._tcp.local.` named by its node
id; the TXT record carries a few hints (below). Everything learnt here is a hint and
nothing more: the node connects to an address it saw and the authenticated handshake
decides who the peer is. A TXT record can claim any id, any core count, any swarm.

TXT keys (all short ASCII; unknown keys are ignored, so later versions may add some)::

    txtvers   1
    id        the node id, `XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX` (checked with its check digits)
    v         protocol versions spoken, comma-separated ("1")
    cores     cores offered when donating
    donating  "1" or "0"
    swarm     `swarm_tag(swarm_id)`: 8 hex digits of a hash of the swarm id, so that a
              node can try members of its own swarm first; never the secret, and not
              the swarm id itself (which is part of the join code)
    name      the owner's name for the node (its host name by default), for display

The port is the SRV record's, the addresses the A records', as DNS-SD has them.

python-zeroconf runs its own asyncio loop on its own thread; from trio we use its
synchronous API (see DESIGN.md, "Discovery"): registering, updating and closing run in
`trio.to_thread.run_sync` (registration probes for ~1.7 s, so it runs in the background
and `Discovery.advertised` is set when it is done); the browser's callbacks run on the
browser's thread and reach trio through `TrioToken.run_sync_soon`, each wrapped so that
no exception can escape into trio (one would end the whole trio run).

A flood of fake adverts must not grow memory without bound: at most `max_peers` peers
are tracked, every kept field is bounded, and complaints about malformed adverts are
logged once per advert through a bounded table.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import ifaddr  # a dependency of zeroconf, which points to it for listing addresses
import trio
from zeroconf import (
    InterfaceChoice,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from octop2p.errors import OctoError
from protocol import SUPPORTED_VERSIONS, CodeError, NodeId

__all__ = [
    "MAX_PEERS",
    "SERVICE_TYPE",
    "Advert",
    "Discovery",
    "DiscoveryError",
    "Interfaces",
    "PeerGone",
    "PeerSeen",
    "parse_advert",
    "serve",
    "swarm_tag",
]

log = logging.getLogger(__name__)

SERVICE_TYPE = "_octop2p._tcp.local."
TXT_VERSION = "1"
MAX_PEERS = 256  # peers tracked at once; beyond this, new adverts are ignored
MAX_ADDRESSES = 8  # addresses kept per peer
MAX_CORES = 4096
MAX_NAME = 63
_MAX_VERSIONS = 16
_LOG_ONCE_SIZE = 256  # remembered complaints; a peer cannot grow the table past this
_RESOLVE_MS = 1000  # when an advert's records are not all cached yet, ask this long
GOODBYE_SECONDS = 3.0  # the most a clean exit waits for zeroconf to say goodbye
_PERSON_SWARM_TAG = b"octop2p mdns tag"

#: Where to run mDNS: every interface, or a list of local addresses ("127.0.0.1").
Interfaces = InterfaceChoice | Sequence[str]


class DiscoveryError(OctoError):
    """LAN discovery could not start; static peers (--peer) still work."""


def swarm_tag(swarm_id: bytes) -> str:
    """The public tag of a swarm for adverts: 8 hex digits of a hash of its id."""
    return hashlib.blake2b(swarm_id, digest_size=4, person=_PERSON_SWARM_TAG).hexdigest()


@dataclass(frozen=True)
class Advert:
    """What this node announces. `addresses` empty: those of the mDNS interfaces."""

    node_id: NodeId
    port: int
    cores: int
    donating: bool
    name: str = ""
    swarm_tag: str | None = None
    versions: tuple[int, ...] = SUPPORTED_VERSIONS
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class PeerSeen:
    """A peer advertised itself, or changed its advert. A hint: the handshake decides."""

    node_id: NodeId  # as claimed; only the handshake proves it
    addresses: tuple[str, ...]
    port: int
    cores: int
    donating: bool
    versions: tuple[int, ...]
    swarm_tag: str | None
    name: str
    service: str  # the mDNS instance name the advert came under


@dataclass(frozen=True)
class PeerGone:
    """A peer withdrew its advert (a clean exit). A crash shows only when records expire."""

    node_id: NodeId
    service: str


PeerEvent = PeerSeen | PeerGone


# --- reading and writing adverts (pure) ------------------------------------------------


def parse_advert(
    service: str, properties: dict[bytes, bytes | None], port: int | None, addresses: Sequence[str]
) -> PeerSeen | str:
    """The advert of `service`, or a one-line reason why it is malformed."""
    if len(service) > 255:
        return "instance name too long"

    def text(key: bytes, limit: int) -> str | None:
        value = properties.get(key)
        if value is None or len(value) > limit:
            return None
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None

    if text(b"txtvers", 8) != TXT_VERSION:
        return f"txtvers is {_shown(properties.get(b'txtvers'))}, not {TXT_VERSION}"
    raw_id = text(b"id", 64)
    if raw_id is None:
        return "no node id"
    try:
        node_id = NodeId.parse(raw_id)
    except CodeError as exc:
        return f"bad node id: {exc}"
    versions = _versions(text(b"v", 6 * _MAX_VERSIONS) or "")
    if not versions:
        return f"bad protocol versions {_shown(properties.get(b'v'))}"
    cores = text(b"cores", 4) or ""
    if not (cores.isascii() and cores.isdigit() and 1 <= int(cores) <= MAX_CORES):
        return f"bad cores {_shown(properties.get(b'cores'))}"
    donating = properties.get(b"donating")
    if donating not in (b"0", b"1"):
        return f"bad donating {_shown(donating)}"
    tag = text(b"swarm", 8)
    if tag is not None and not (len(tag) == 8 and all(c in "0123456789abcdef" for c in tag)):
        tag = None  # optional: a bad tag only loses the hint
    name = "".join(c for c in text(b"name", 4 * MAX_NAME) or "" if c.isprintable())[:MAX_NAME]
    if port is None or not 1 <= port <= 65535:
        return f"bad port {port!r}"
    kept = tuple(a for a in addresses[: 4 * MAX_ADDRESSES] if _is_address(a))[:MAX_ADDRESSES]
    if not kept:
        return "no usable address"
    return PeerSeen(
        node_id=node_id,
        addresses=kept,
        port=port,
        cores=int(cores),
        donating=donating == b"1",
        versions=versions,
        swarm_tag=tag,
        name=name,
        service=service,
    )


def _shown(value: bytes | None) -> str:
    """A remote value for a log line: its repr, cut short (the sender chose its length)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _versions(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not 1 <= len(parts) <= _MAX_VERSIONS:
        return ()
    if not all(p.isascii() and p.isdigit() and len(p) <= 5 for p in parts):
        return ()
    versions = tuple(int(p) for p in parts)
    return versions if all(0 < v < 2**16 for v in versions) else ()


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    return True


def _txt(advert: Advert) -> dict[str, str]:
    txt = {
        "txtvers": TXT_VERSION,
        "id": str(advert.node_id),
        "v": ",".join(map(str, advert.versions)),
        "cores": str(advert.cores),
        "donating": "1" if advert.donating else "0",
    }
    if advert.swarm_tag is not None:
        txt["swarm"] = advert.swarm_tag
    if advert.name:
        # A TXT string holds 255 bytes, "name=" included; 63 characters may be 252.
        txt["name"] = advert.name[:MAX_NAME].encode()[:200].decode(errors="ignore")
    return txt


def _local_addresses(interfaces: Interfaces) -> list[str]:
    if not isinstance(interfaces, InterfaceChoice):
        return [
            a for a in interfaces if _is_address(a) and not ipaddress.ip_address(a).is_unspecified
        ]
    found = {
        ip.ip
        for adapter in ifaddr.get_adapters()
        for ip in adapter.ips
        if ip.is_IPv4 and isinstance(ip.ip, str)
    }
    outside = sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)
    return outside or sorted(found)


def _service_info(advert: Advert, interfaces: Interfaces, name: str | None = None) -> ServiceInfo:
    addresses = list(advert.addresses) or _local_addresses(interfaces)
    host = str(advert.node_id).lower()
    return ServiceInfo(
        SERVICE_TYPE,
        name or f"{advert.node_id}.{SERVICE_TYPE}",
        port=advert.port,
        properties=_txt(advert),
        # One host name per node, not the machine's: several nodes may share a machine.
        server=f"octop2p-{host}.local.",
        parsed_addresses=addresses,
    )


class _LogOnce:
    """Remembers what was already logged; bounded, oldest forgotten first."""

    def __init__(self, size: int = _LOG_ONCE_SIZE) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def first(self, key: str) -> bool:
        """True the first time `key` is seen (since it was last forgotten)."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True


# --- the service -------------------------------------------------------------------------


class Discovery:
    """A running discovery service: what `serve` hands to `nursery.start`'s caller."""

    def __init__(
        self,
        zc: Zeroconf,
        advert: Advert,
        on_change: Callable[[PeerEvent], None],
        token: trio.lowlevel.TrioToken,
        interfaces: Interfaces,
        max_peers: int,
    ) -> None:
        self._zc = zc
        self._wanted = advert
        self._on_change = on_change
        self._token = token
        self._interfaces = interfaces
        self._max_peers = max_peers
        self._peers: dict[str, PeerSeen] = {}  # by service name; touched in trio only
        self._log_once = _LogOnce()
        self._warned_full = False
        self._changed = trio.Event()
        self._closed = False
        self._browser: ServiceBrowser | None = None
        #: Set once this node's advert is registered (registration probes for ~1.7 s).
        self.advertised = trio.Event()

    @property
    def advert(self) -> Advert:
        """The advert as last given to `serve` or `update`."""
        return self._wanted

    def peers(self) -> list[PeerSeen]:
        """The peers currently advertised, as hints."""
        return list(self._peers.values())

    def update(self, advert: Advert) -> None:
        """Announce a changed advert (donation switched, cores changed); returns at once.

        Updates are published in the background, in order, the latest one winning.
        """
        if advert.node_id != self._wanted.node_id:
            raise ValueError("a node's advert keeps its node id")
        self._wanted = advert
        self._changed.set()

    # -- publishing (trio) ------------------------------------------------------------------

    async def _publish(self) -> None:
        published: Advert | None = None
        info: ServiceInfo | None = None
        while True:
            wanted = self._wanted
            if wanted != published:
                try:
                    info = await self._push(wanted, info)
                    published = wanted
                except (
                    Exception
                ) as exc:  # zeroconf raises assorted errors; a hint is not worth dying for
                    log.warning("mDNS: could not advertise node %s: %s", wanted.node_id, exc)
            if self._wanted == wanted:
                await self._changed.wait()
            self._changed = trio.Event()

    async def _push(self, advert: Advert, info: ServiceInfo | None) -> ServiceInfo:
        if info is None:
            info = await trio.to_thread.run_sync(self._register, advert)
            self.advertised.set()
            log.info(
                "mDNS: advertising node %s as %r on %s",
                advert.node_id,
                info.name,
                ", ".join(info.parsed_addresses()),
            )
            return info
        new = await trio.to_thread.run_sync(self._update, advert, info.name)
        log.debug("mDNS: updated the advert of node %s: %s", advert.node_id, _txt(advert))
        return new

    # Both run in a worker thread: they block, and listing addresses may too.

    def _register(self, advert: Advert) -> ServiceInfo:
        info = _service_info(advert, self._interfaces)
        # allow_name_change: whoever squats on our name cannot keep us off the LAN;
        # peers go by the id in the TXT record, and that only as a hint.
        self._zc.register_service(info, allow_name_change=True)
        return info

    def _update(self, advert: Advert, name: str) -> ServiceInfo:
        info = _service_info(advert, self._interfaces, name=name)
        self._zc.update_service(info)
        return info

    # -- browsing (zeroconf's browser thread) ----------------------------------------------

    def _start_browser(self) -> None:
        self._browser = ServiceBrowser(self._zc, SERVICE_TYPE, handlers=[self._on_service])

    def _on_service(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        # Runs on the browser's thread: an exception here would end that thread, and
        # discovery with it, so everything is caught.
        try:
            if state_change is ServiceStateChange.Removed:
                self._to_trio(self._gone, name)
                return
            info = ServiceInfo(service_type, name)
            if not info.load_from_cache(zeroconf) and not info.request(zeroconf, _RESOLVE_MS):
                self._to_trio(self._seen, name, "did not resolve (incomplete records)")
                return
            result = parse_advert(name, info.properties, info.port, info.parsed_scoped_addresses())
            self._to_trio(self._seen, name, result)
        except Exception as exc:
            self._to_trio(self._seen, name[:300], f"could not read it: {exc!r}"[:300])

    def _to_trio(self, fn: Callable[..., None], *args: object) -> None:
        try:
            self._token.run_sync_soon(self._guarded, fn, args)
        except trio.RunFinishedError:
            pass  # trio is gone; nobody is left to tell

    def _guarded(self, fn: Callable[..., None], args: tuple[object, ...]) -> None:
        # Runs in trio, outside any task: an exception escaping it would end the trio run.
        if self._closed:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("mDNS: handling a discovery event failed")

    # -- the peer table (trio) -------------------------------------------------------------

    def _seen(self, name: str, result: PeerSeen | str) -> None:
        if isinstance(result, str):
            # Once per advert, not per reason: a peer that cycles through broken
            # variants must not be able to fill the log.
            if self._log_once.first(name):
                log.warning("mDNS: ignoring the malformed advert %.100r: %s", name, result)
            if name in self._peers:
                self._gone(name)  # it was well formed before: its old hints are stale
            return
        if result.node_id == self._wanted.node_id:
            return  # our own advert, or one claiming our id: the handshake sorts that out
        if name not in self._peers and len(self._peers) >= self._max_peers:
            if not self._warned_full:
                self._warned_full = True
                log.warning(
                    "mDNS: %d peers tracked, ignoring further adverts (first: peer %s)",
                    self._max_peers,
                    result.node_id,
                )
            return
        if self._peers.get(name) == result:
            return  # a record refresh that changes nothing
        self._peers[name] = result
        log.debug("mDNS: saw peer %s at %s:%s", result.node_id, result.addresses, result.port)
        self._on_change(result)

    def _gone(self, name: str) -> None:
        peer = self._peers.pop(name, None)
        if peer is None:
            return
        log.debug("mDNS: peer %s withdrew its advert %r", peer.node_id, name)
        # Two adverts may claim one id (a renamed one, or a fake): the other stays a hint.
        other = next((p for p in self._peers.values() if p.node_id == peer.node_id), None)
        self._on_change(other if other is not None else PeerGone(peer.node_id, name))

    # -- closing (a worker thread) ---------------------------------------------------------

    def _close(self) -> None:
        # Stop browsing first, so no event arrives while the goodbyes go out;
        # Zeroconf.close() sends goodbye records for our advert, then closes the sockets.
        if self._browser is not None:
            self._browser.cancel()
        self._zc.close()


def _open(interfaces: Interfaces) -> Zeroconf:
    choice = interfaces if isinstance(interfaces, InterfaceChoice) else list(interfaces)
    try:
        return Zeroconf(interfaces=choice, use_asyncio=False)
    except OSError as exc:
        raise DiscoveryError(
            f"LAN discovery (mDNS) could not start: {exc}. Peers can still be given with "
            "--peer HOST:PORT, or turn discovery off with `discovery = false` in config.toml"
        ) from exc


async def serve(
    info: Advert,
    on_change: Callable[[PeerEvent], None],
    *,
    interfaces: Interfaces = InterfaceChoice.All,
    max_peers: int = MAX_PEERS,
    task_status: trio.TaskStatus[Discovery] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise `info` and report peers to `on_change` until cancelled.

    `on_change` is called in trio, from no task, so it must not block: hand the event on
    (a memory channel's `send_nowait`, a dict update). Started with `nursery.start`, this
    returns the `Discovery` once browsing runs, before the advert is registered
    (`Discovery.advertised`). On cancellation it says goodbye (peers see `PeerGone` at
    once) within `GOODBYE_SECONDS`. Raises `DiscoveryError` if mDNS cannot start.
    """
    if isinstance(interfaces, str):
        interfaces = [interfaces]  # a lone address, not a sequence of characters
    zc = await trio.to_thread.run_sync(_open, interfaces)
    discovery = Discovery(
        zc, info, on_change, trio.lowlevel.current_trio_token(), interfaces, max_peers
    )
    try:
        await trio.to_thread.run_sync(discovery._start_browser)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(discovery._publish)
            task_status.started(discovery)
    finally:
        discovery._closed = True
        with trio.move_on_after(GOODBYE_SECONDS, shield=True) as scope:
            # abandon_on_cancel: if zeroconf hangs, the node still stops in time.
            await trio.to_thread.run_sync(discovery._close, abandon_on_cancel=True)
        if scope.cancelled_caught:
            log.warning("mDNS: saying goodbye took over %.0f s; gave up", GOODBYE_SECONDS)
