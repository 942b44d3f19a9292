"""LAN discovery: advert parsing and the peer table without a network, then real zeroconf
on 127.0.0.1 (nodes find each other, see updates and goodbyes, ignore malformed adverts).

Other test runs on this machine may advertise on loopback at the same time, so every
check looks only at the node ids its own test made.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import trio
from zeroconf import ServiceInfo, Zeroconf

from octop2p.net import _advert, _discovery
from octop2p.net._discovery import (
    MAX_ADDRESSES,
    SERVICE_TYPE,
    Advert,
    Discovery,
    DiscoveryError,
    PeerGone,
    PeerSeen,
    parse_advert,
    serve,
    swarm_tag,
)
from protocol import SUPPORTED_VERSIONS, NodeId, NodeIdentity

LOOPBACK = ["127.0.0.1"]


def new_id() -> NodeId:
    return NodeIdentity.generate().node_id


def txt(advert: Advert) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in _advert.txt_record(advert).items()}


# --- adverts, without a network -------------------------------------------------------------


def test_swarm_tag_is_short_stable_and_hides_the_id() -> None:
    swarm_id = bytes(range(8))
    tag = swarm_tag(swarm_id)
    assert tag == swarm_tag(swarm_id) != swarm_tag(bytes(8))
    assert len(tag) == 8 and int(tag, 16) >= 0
    assert tag not in swarm_id.hex()


def test_txt_record_parses_back() -> None:
    advert = Advert(new_id(), 7878, 4, True, name="lab-3", swarm_tag=swarm_tag(b"s" * 8))
    peer = parse_advert("x." + SERVICE_TYPE, txt(advert), 7878, ["192.0.2.7", "fe80::1%2"])
    assert peer == PeerSeen(
        node_id=advert.node_id,
        addresses=("192.0.2.7", "fe80::1%2"),
        port=7878,
        cores=4,
        donating=True,
        versions=SUPPORTED_VERSIONS,
        swarm_tag=advert.swarm_tag,
        name="lab-3",
        service="x." + SERVICE_TYPE,
    )
    assert b"secret" not in b"".join(k + (v or b"") for k, v in txt(advert).items())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({b"txtvers": b"2"}, "txtvers"),
        ({b"id": None}, "no node id"),
        ({b"id": b"AAAAAAA-AAAAAAA-AAAAAAA-AAAAAAB"}, "bad node id"),  # check digit
        ({b"id": b"\xff" * 40}, "no node id"),
        ({b"v": b"one"}, "bad protocol versions"),
        ({b"v": b"0"}, "bad protocol versions"),
        ({b"v": b",".join([b"1"] * 17)}, "bad protocol versions"),
        ({b"cores": b"0"}, "bad cores"),
        ({b"cores": b"99999"}, "bad cores"),
        ({b"cores": "４".encode()}, "bad cores"),
        ({b"donating": b"yes"}, "bad donating"),
        ({b"donating": None}, "bad donating"),
    ],
)
def test_malformed_txt_records_are_named(change: dict[bytes, bytes | None], reason: str) -> None:
    properties = {**txt(Advert(new_id(), 1, 1, False)), **change}
    result = parse_advert("x." + SERVICE_TYPE, properties, 1, ["127.0.0.1"])
    assert isinstance(result, str) and reason in result
    assert len(result) < 200  # a remote value is cut short before it reaches a log


@pytest.mark.parametrize(
    ("port", "addresses", "reason"),
    [(None, ["127.0.0.1"], "bad port"), (0, ["127.0.0.1"], "bad port"), (1, [], "no usable")],
)
def test_adverts_without_a_place_to_connect_are_malformed(
    port: int | None, addresses: list[str], reason: str
) -> None:
    result = parse_advert("x", txt(Advert(new_id(), 1, 1, False)), port, addresses)
    assert isinstance(result, str) and reason in result


def test_what_is_kept_per_peer_is_bounded() -> None:
    properties = {
        **txt(Advert(new_id(), 1, 1, False)),
        b"name": b"\x1b[31m" + b"n" * 200,
        b"swarm": b"not-hex!",
        b"extra": b"x" * 200,  # unknown keys are dropped
    }
    addresses = ["nonsense"] + [f"10.0.0.{i}" for i in range(50)]
    peer = parse_advert("x", properties, 1, addresses)
    assert isinstance(peer, PeerSeen)
    assert peer.name == "[31m" + "n" * 59  # control characters dropped, then cut to 63
    assert peer.swarm_tag is None
    assert peer.addresses == tuple(f"10.0.0.{i}" for i in range(MAX_ADDRESSES))


def test_log_once_table_is_bounded() -> None:
    once = _discovery._LogOnce(size=3)
    assert [once.first(k) for k in "abcab"] == [True, True, True, False, False]
    assert once.first("d") is True  # evicts "c", the least recently seen
    assert once.first("c") is True
    assert len(once._seen) == 3


# --- the peer table, without a network ------------------------------------------------------


def peer(node_id: NodeId, service: str, **changes: Any) -> PeerSeen:
    fields: dict[str, Any] = dict(
        node_id=node_id,
        addresses=("127.0.0.1",),
        port=1,
        cores=1,
        donating=False,
        versions=(1,),
        swarm_tag=None,
        name="",
        service=service,
    )
    return PeerSeen(**{**fields, **changes})


def table(events: list[Any], max_peers: int = 3, on_change: Callable[[Any], None] | None = None):
    own = Advert(new_id(), 1, 1, False)
    return Discovery(
        None,  # type: ignore[arg-type]  # the table never touches zeroconf
        own,
        on_change or events.append,
        trio.lowlevel.current_trio_token(),
        LOOPBACK,
        max_peers,
    )


async def test_peer_table_reports_changes_only_and_ignores_itself() -> None:
    events: list[Any] = []
    d = table(events)
    a = new_id()
    d._seen("a", peer(a, "a"))
    d._seen("a", peer(a, "a"))  # a refresh that changes nothing
    d._seen("a", peer(a, "a", donating=True))
    d._seen("me", peer(d.advert.node_id, "me"))
    d._gone("a")
    d._gone("a")
    d._gone("never-seen")
    assert events == [peer(a, "a"), peer(a, "a", donating=True), PeerGone(a, "a")]
    assert d.peers() == []


async def test_peer_table_is_bounded_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    events: list[Any] = []
    d = table(events, max_peers=3)
    ids = [new_id() for _ in range(10)]
    with caplog.at_level(logging.WARNING, logger="octop2p.net._discovery"):
        for i, node_id in enumerate(ids):
            d._seen(f"s{i}", peer(node_id, f"s{i}"))
        d._seen("s0", peer(ids[0], "s0", cores=2))  # a tracked peer still updates
    assert len(d.peers()) == 3
    assert [e.node_id for e in events] == ids[:3] + ids[:1]
    assert ["3 peers tracked" in r.getMessage() for r in caplog.records] == [True]


async def test_malformed_adverts_log_once_and_retract_a_good_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[Any] = []
    d = table(events)
    a = new_id()
    d._seen("a", peer(a, "a"))
    with caplog.at_level(logging.WARNING, logger="octop2p.net._discovery"):
        for reason in ("bad cores", "bad cores", "bad port", "no node id"):
            d._seen("a", reason)
    assert events == [peer(a, "a"), PeerGone(a, "a")]
    assert len(caplog.records) == 1
    assert "malformed advert 'a': bad cores" in caplog.records[0].getMessage()


async def test_two_adverts_claiming_one_id() -> None:
    events: list[Any] = []
    d = table(events)
    a = new_id()
    d._seen("a", peer(a, "a"))
    d._seen("a (2)", peer(a, "a (2)", port=2))
    d._gone("a")  # the other advert still stands: hand it on instead of a PeerGone
    d._gone("a (2)")
    assert events[2:] == [peer(a, "a (2)", port=2), PeerGone(a, "a (2)")]


async def test_event_handler_errors_are_caught_and_closed_tables_are_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("bug in the node")

    d = table([], on_change=broken)
    with caplog.at_level(logging.ERROR, logger="octop2p.net._discovery"):
        d._to_trio(d._seen, "a", peer(new_id(), "a"))
        await trio.testing.wait_all_tasks_blocked()
    assert "handling a discovery event failed" in caplog.text
    events: list[Any] = []
    d = table(events)
    d._closed = True
    d._to_trio(d._seen, "a", peer(new_id(), "a"))
    await trio.testing.wait_all_tasks_blocked()
    assert events == []


async def test_update_keeps_the_node_id() -> None:
    d = table([])
    d.update(dataclasses.replace(d.advert, donating=True))
    assert d.advert.donating
    with pytest.raises(ValueError, match="keeps its node id"):
        d.update(dataclasses.replace(d.advert, node_id=new_id()))


# --- real zeroconf on 127.0.0.1 --------------------------------------------------------------


@pytest.fixture(scope="module")
def mdns_loopback() -> None:
    """Skip, saying why, where multicast does not loop back on 127.0.0.1."""
    group = "224.0.0.251"  # mDNS's group, on a free port: the real 5353 is left alone
    try:
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("", 0))
            membership = socket.inet_aton(group) + socket.inet_aton("127.0.0.1")
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            tx.sendto(b"probe", (group, rx.getsockname()[1]))
            rx.settimeout(2)
            rx.recv(16)
    except OSError as exc:
        pytest.skip(
            f"multicast to {group} does not loop back on 127.0.0.1 here ({exc}); "
            "`ip link set lo multicast on` may fix it"
        )


class Recorder:
    """Collects discovery events about the given ids; `wait` for a condition on them."""

    def __init__(self, ids: list[NodeId]) -> None:
        self.ids = set(ids)
        self.events: list[PeerSeen | PeerGone] = []
        self.latest: dict[NodeId, PeerSeen | PeerGone] = {}
        self._changed = trio.Event()

    def on_change(self, event: PeerSeen | PeerGone) -> None:
        if event.node_id in self.ids:
            self.events.append(event)
            self.latest[event.node_id] = event
            self._changed.set()

    async def wait(self, condition: Callable[[Recorder], bool]) -> None:
        while not condition(self):
            await self._changed.wait()
            self._changed = trio.Event()

    def seen(self) -> set[NodeId]:
        return {i for i, e in self.latest.items() if isinstance(e, PeerSeen)}


@dataclasses.dataclass
class Node:
    discovery: Discovery
    scope: trio.CancelScope
    stopped: trio.Event


async def start(nursery: trio.Nursery, advert: Advert, recorder: Recorder) -> Node:
    scope, stopped = trio.CancelScope(), trio.Event()

    async def run(task_status: trio.TaskStatus[Discovery]) -> None:
        try:
            with scope:
                await serve(
                    advert, recorder.on_change, interfaces=LOOPBACK, task_status=task_status
                )
        finally:
            stopped.set()

    return Node(await nursery.start(run), scope, stopped)


async def test_nodes_find_each_other_see_updates_and_goodbyes(mdns_loopback: None) -> None:
    ids = [new_id() for _ in range(3)]
    adverts = [Advert(i, 7000 + n, 1, False, name=f"n{n}") for n, i in enumerate(ids)]
    recorders = [Recorder([i for i in ids if i != own]) for own in ids]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            begin = time.monotonic()
            nodes = [await start(nursery, a, r) for a, r in zip(adverts, recorders, strict=True)]
            for recorder in recorders:
                await recorder.wait(lambda r: r.seen() == r.ids)
            found = time.monotonic() - begin
            seen = recorders[1].latest[ids[0]]
            assert isinstance(seen, PeerSeen)
            assert (seen.addresses, seen.port, seen.cores, seen.donating, seen.name) == (
                ("127.0.0.1",),
                7000,
                1,
                False,
                "n0",
            )

            await nodes[0].discovery.advertised.wait()  # else the update waits for it
            begin = time.monotonic()
            nodes[0].discovery.update(dataclasses.replace(adverts[0], donating=True))
            for recorder in recorders[1:]:
                await recorder.wait(lambda r: getattr(r.latest[ids[0]], "donating", False))
            updated = time.monotonic() - begin

            begin = time.monotonic()
            nodes[2].scope.cancel()
            await nodes[2].stopped.wait()
            closed = time.monotonic() - begin
            for recorder in recorders[:2]:
                await recorder.wait(lambda r: isinstance(r.latest[ids[2]], PeerGone))
            gone = time.monotonic() - begin
            nursery.cancel_scope.cancel()
    print(f"found {found:.2f} s, update {updated:.2f} s, close {closed:.2f} s, gone {gone:.2f} s")
    assert all(node.discovery.advertised.is_set() for node in nodes)


async def test_malformed_adverts_are_ignored_and_logged_once(
    mdns_loopback: None, caplog: pytest.LogCaptureFixture
) -> None:
    good, bad_id = new_id(), new_id()
    bad = {"txtvers": "1", "id": str(bad_id), "v": "1", "cores": "lots", "donating": "1"}
    infos = [
        ServiceInfo(
            SERVICE_TYPE,
            f"{name}.{SERVICE_TYPE}",
            port=9,
            properties=properties,
            server=f"{name.lower()}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        for name, properties in [
            (f"bad-{bad_id}", bad),
            (f"junk-{bad_id}", {"id": "\x00" * 40}),
            (str(good), {k: v for k, v in _advert.txt_record(Advert(good, 9, 2, True)).items()}),
        ]
    ]
    zc = Zeroconf(interfaces=LOOPBACK)
    recorder = Recorder([good, bad_id])
    try:
        with (
            trio.fail_after(10),
            caplog.at_level(logging.WARNING, logger="octop2p.net._discovery"),
        ):
            async with trio.open_nursery() as nursery:
                await start(nursery, Advert(new_id(), 1, 1, False), recorder)

                async def register(info: ServiceInfo) -> None:
                    await trio.to_thread.run_sync(zc.register_service, info)

                async with trio.open_nursery() as registering:  # ~1.7 s, all at once
                    for info in infos:
                        registering.start_soon(register, info)
                await recorder.wait(lambda r: good in r.seen())
                while sum(f"bad-{bad_id}" in r.getMessage() for r in caplog.records) == 0:
                    await trio.sleep(0.05)
                # The same advert broken another way: still one warning for it.
                bad["cores"] = "0"
                await trio.to_thread.run_sync(zc.update_service, _with_properties(infos[0], bad))
                # ...and then the good one: once its change is seen, so is the bad one's.
                flipped = _advert.txt_record(Advert(good, 9, 2, False))
                await trio.to_thread.run_sync(
                    zc.update_service, _with_properties(infos[2], flipped)
                )
                await recorder.wait(lambda r: not getattr(r.latest[good], "donating", True))
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(zc.close)
    assert recorder.seen() == {good}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum(f"bad-{bad_id}" in w and "bad cores b'lots'" in w for w in warnings) == 1
    assert sum(f"bad-{bad_id}" in w for w in warnings) == 1
    assert sum(f"junk-{bad_id}" in w for w in warnings) == 1


def _with_properties(info: ServiceInfo, properties: dict[str, str]) -> ServiceInfo:
    return ServiceInfo(
        info.type,
        info.name,
        port=info.port,
        properties=properties,
        server=info.server,
        parsed_addresses=info.parsed_addresses(),
    )


async def test_stopping_during_registration_is_clean_and_prompt(mdns_loopback: None) -> None:
    with trio.fail_after(_discovery.GOODBYE_SECONDS + 4):
        async with trio.open_nursery() as nursery:
            node = await start(nursery, Advert(new_id(), 1, 1, False), Recorder([]))
            assert not node.discovery.advertised.is_set()
            node.scope.cancel()
            await node.stopped.wait()


def test_a_long_name_fits_its_txt_string() -> None:
    advert = Advert(new_id(), 1, 1, False, name="\N{OCTOPUS}" * 63)  # 4 bytes each
    value = _advert.txt_record(advert)["name"].encode()
    assert len(b"name=" + value) <= 255
    peer = parse_advert("x", txt(advert), 1, ["127.0.0.1"])
    assert isinstance(peer, PeerSeen) and peer.name == "\N{OCTOPUS}" * 50


async def test_mdns_that_cannot_start_is_a_clear_error() -> None:
    advert = Advert(new_id(), 1, 1, False)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with pytest.raises(DiscoveryError, match="--peer HOST:PORT"):
                # 203.0.113.0/24 is for documentation: no interface here has it.
                await nursery.start(
                    functools.partial(serve, advert, print, interfaces=["203.0.113.9"])
                )
