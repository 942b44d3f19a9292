"""What a node announces on the LAN and how it reads what others announce (no trio).

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
Every field read from a peer's advert is bounded (`parse_advert`). The service that
registers and browses the adverts is `octop2p.net._discovery`.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import ifaddr  # a dependency of zeroconf, which points to it for listing addresses
from zeroconf import InterfaceChoice, ServiceInfo

from protocol import SUPPORTED_VERSIONS, CodeError, NodeId

__all__ = [
    "MAX_ADDRESSES",
    "SERVICE_TYPE",
    "Advert",
    "Interfaces",
    "PeerEvent",
    "PeerGone",
    "PeerSeen",
    "parse_advert",
    "service_info",
    "swarm_tag",
    "txt_record",
]

SERVICE_TYPE = "_octop2p._tcp.local."
TXT_VERSION = "1"
MAX_ADDRESSES = 8  # addresses kept per peer
MAX_CORES = 4096
MAX_NAME = 63
_MAX_VERSIONS = 16
_PERSON_SWARM_TAG = b"octop2p mdns tag"

#: Where to run mDNS: every interface, or a list of local addresses ("127.0.0.1").
Interfaces = InterfaceChoice | Sequence[str]


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


def txt_record(advert: Advert) -> dict[str, str]:
    """The TXT record of `advert` (keys in the module docstring)."""
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


def service_info(advert: Advert, interfaces: Interfaces, name: str | None = None) -> ServiceInfo:
    """The DNS-SD service that announces `advert` on `interfaces` (blocking: it may list
    the machine's addresses)."""
    addresses = list(advert.addresses) or _local_addresses(interfaces)
    host = str(advert.node_id).lower()
    return ServiceInfo(
        SERVICE_TYPE,
        name or f"{advert.node_id}.{SERVICE_TYPE}",
        port=advert.port,
        properties=txt_record(advert),
        # One host name per node, not the machine's: several nodes may share a machine.
        server=f"octop2p-{host}.local.",
        parsed_addresses=addresses,
    )
