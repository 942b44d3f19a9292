"""LAN discovery: advertise this node and browse for others with mDNS (python-zeroconf).

What an advert holds, and how a peer's is read, is `octop2p.net._advert`. Everything
learnt here is a hint and nothing more: the node connects to an address it saw and the
authenticated handshake decides who the peer is.

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

import logging
from collections import OrderedDict
from collections.abc import Callable

import trio
from zeroconf import (
    InterfaceChoice,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from octop2p.errors import OctoError
from octop2p.net._advert import (
    MAX_ADDRESSES,
    SERVICE_TYPE,
    Advert,
    Interfaces,
    PeerEvent,
    PeerGone,
    PeerSeen,
    parse_advert,
    service_info,
    swarm_tag,
    txt_record,
)

__all__ = [
    "MAX_ADDRESSES",
    "MAX_PEERS",
    "SERVICE_TYPE",
    "Advert",
    "Discovery",
    "DiscoveryError",
    "Interfaces",
    "PeerEvent",
    "PeerGone",
    "PeerSeen",
    "parse_advert",
    "serve",
    "swarm_tag",
]

log = logging.getLogger(__name__)

MAX_PEERS = 256  # peers tracked at once; beyond this, new adverts are ignored
_LOG_ONCE_SIZE = 256  # remembered complaints; a peer cannot grow the table past this
_RESOLVE_MS = 1000  # when an advert's records are not all cached yet, ask this long
GOODBYE_SECONDS = 3.0  # the most a clean exit waits for zeroconf to say goodbye


class DiscoveryError(OctoError):
    """LAN discovery could not start; static peers (--peer) still work."""


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
        log.debug("mDNS: updated the advert of node %s: %s", advert.node_id, txt_record(advert))
        return new

    # Both run in a worker thread: they block, and listing addresses may too.

    def _register(self, advert: Advert) -> ServiceInfo:
        info = service_info(advert, self._interfaces)
        # allow_name_change: whoever squats on our name cannot keep us off the LAN;
        # peers go by the id in the TXT record, and that only as a hint.
        self._zc.register_service(info, allow_name_change=True)
        return info

    def _update(self, advert: Advert, name: str) -> ServiceInfo:
        info = service_info(advert, self._interfaces, name=name)
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
