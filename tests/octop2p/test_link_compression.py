"""Which links deflate large blobs: never one within this host (a real TCP connection on
127.0.0.1 carries a fragment's bytes as they are), still every other one (the peer
offered ``zlib``, the blob shrinks); and how a link tells the two apart."""

from __future__ import annotations

import socket
import types

import trio
import trio.testing

from octop2p.net._peer import PeerLink, loopback, same_host
from protocol import COMPRESSION, Connection, Hello, MessageReceived, Role
from tests.octop2p.test_peer import CHIEF, DONOR, SECRET, fragment

#: A map task's size (the guide's wordcount over 20 MB): ``fragment``'s bytes deflate
#: to almost nothing.
SIZE = 680_000


class Counted(trio.abc.Stream):
    """A stream that counts the bytes it receives (the wire's share of a message)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.received = inner, 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def fragment_over(chief_stream: trio.abc.Stream, donor_stream: trio.abc.Stream) -> int:
    """Bytes the donor reads for one fragment of SIZE bytes, once each side said hello with
    ``zlib`` in its features (as nodes do)."""
    counted = Counted(donor_stream)
    chief = PeerLink(chief_stream, Connection(Role.INITIATOR, CHIEF, swarm_secret=SECRET), "c")
    donor = PeerLink(counted, Connection(Role.RESPONDER, DONOR, swarm_secret=SECRET), "d")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chief.open)
        nursery.start_soon(donor.open)
    hello = Hello(name="n", software="t", cores=1, donating=True, features=(COMPRESSION,))
    await donor.send(hello)
    assert isinstance(await chief._next_event(), MessageReceived)  # its Hello: zlib offered
    assert chief.conn.compress_to_peer
    sent = fragment(1, SIZE)
    before = counted.received
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chief.send, sent)
        event = await donor._next_event()
    assert isinstance(event, MessageReceived) and event.message == sent
    await chief.aclose()
    await donor.aclose()
    return counted.received - before


async def test_a_link_within_this_host_sends_large_blobs_as_they_are() -> None:
    """On loopback a deflated fragment costs the chief about 7 ms of CPU per 680 KB (and
    the donor 2 ms to inflate) to save bytes that cost a memory copy: it goes plain."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.abc.Stream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        chief_stream = await trio.open_tcp_stream("127.0.0.1", port)
    await listeners[0].aclose()
    wire = await fragment_over(chief_stream, accepted[0])
    assert wire > SIZE


async def test_a_link_to_another_host_still_deflates_large_blobs() -> None:
    """A stream that is not a connection within this host (here an in-memory pair)
    counts as a network: the same fragment travels deflated."""
    chief_stream, donor_stream = trio.testing.memory_stream_pair()
    wire = await fragment_over(chief_stream, donor_stream)
    assert wire < SIZE // 4


def tcp(peer: str, local: str, family: int = socket.AF_INET) -> types.SimpleNamespace:
    """A stream whose socket names ``peer`` and ``local`` (as getpeername/getsockname)."""
    sock = types.SimpleNamespace(getpeername=lambda: (peer, 1), getsockname=lambda: (local, 2),
                                 family=family)
    return types.SimpleNamespace(socket=sock)


def test_same_host_is_loopback_or_the_hosts_own_address() -> None:
    assert same_host(tcp("127.0.0.1", "127.0.0.1"))
    assert same_host(tcp("127.0.0.2", "127.0.0.1"))
    assert same_host(tcp("::1", "::1", socket.AF_INET6))
    assert same_host(tcp("::ffff:127.0.0.1", "::ffff:127.0.0.1", socket.AF_INET6))
    assert same_host(tcp("192.168.1.5", "192.168.1.5"))  # a host dialling its LAN address
    assert not same_host(tcp("192.168.1.6", "192.168.1.5"))
    assert not same_host(tcp("10.231.0.2", "10.231.0.1"))
    assert not same_host(tcp("fe80::2%eth0", "fe80::1%eth0", socket.AF_INET6))
    assert not same_host(types.SimpleNamespace())  # not a socket at all
    closed = types.SimpleNamespace(socket=types.SimpleNamespace(
        getpeername=lambda: (_ for _ in ()).throw(OSError("not connected"))))
    assert not same_host(closed)


def test_loopback_names() -> None:
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert loopback("::ffff:127.0.0.1")
    assert not loopback("0.0.0.0") and not loopback("192.168.1.5") and not loopback("host")
