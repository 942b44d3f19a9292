"""PeerLink on in-memory streams: two real links (real handshake, real encryption) joined
by trio's testing streams, with a virtual clock. Cancellation mid-send, stalls, resets
and the authenticated close."""

from __future__ import annotations

import types

import pytest
import trio
import trio.testing

from octop2p.net import _peer
from octop2p.net._peer import HEARTBEAT_SECONDS, SILENCE_SECONDS, LinkClosed, PeerLink
from protocol import (
    Connection,
    ConnectionClosed,
    Envelope,
    EnvelopeKind,
    Fragment,
    Heartbeat,
    Message,
    MessageReceived,
    NodeIdentity,
    Role,
    Task,
    WorkRequest,
    content_hash,
)

SECRET = bytes(range(32))
CHIEF = NodeIdentity.generate()
DONOR = NodeIdentity.generate()
JOB = bytes(16)


def fragment(seq: int, size: int) -> Fragment:
    envelope = Envelope.sign(CHIEF, EnvelopeKind.FRAGMENT, JOB, seq, b"x" * size,
                             ref=content_hash(b"package"))
    return Fragment(task=Task.PROCESS, envelope=envelope)


async def linked(lockstep: bool = True) -> tuple[PeerLink, PeerLink]:
    """Two links past their handshake; with ``lockstep`` a write waits for the reader."""
    pair = trio.testing.lockstep_stream_pair() if lockstep else trio.testing.memory_stream_pair()
    a = PeerLink(pair[0], Connection(Role.INITIATOR, CHIEF, swarm_secret=SECRET), "a")
    b = PeerLink(pair[1], Connection(Role.RESPONDER, DONOR, swarm_secret=SECRET), "b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.open)
        nursery.start_soon(b.open)
    return a, b


async def receive(link: PeerLink, n: int) -> list[Message | ConnectionClosed]:
    """The next ``n`` messages (or the close) that ``link`` reads."""
    got: list[Message | ConnectionClosed] = []
    while len(got) < n:
        event = await link._next_event()
        if isinstance(event, MessageReceived):
            got.append(event.message)
        elif isinstance(event, ConnectionClosed):
            got.append(event)
            break
    return got


async def test_a_send_cancelled_midway_leaves_the_link_sound(autojump_clock: object) -> None:
    """The job that sent a fragment failed while the write was under way (its task was
    cancelled): the cipher had already moved on, so the write must still finish, or
    every later record fails to decrypt and the link dies."""
    a, b = await linked()
    big, small = fragment(1, 300_000), WorkRequest(credits=3, job_id=JOB)
    got: list[Message | ConnectionClosed] = []

    async def sender() -> None:
        with trio.move_on_after(1):  # the job fails while the peer is not reading yet
            await a.send(big)
        await a.send(small)

    async def reader() -> None:
        await trio.sleep(2)
        got.extend(await receive(b, 2))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        nursery.start_soon(reader)
    assert got == [big, small]


async def test_a_peer_that_stops_reading_breaks_the_link_not_the_sender(
        autojump_clock: object) -> None:
    a, _b = await linked()
    started = trio.current_time()
    with pytest.raises(LinkClosed):
        await a.send(fragment(1, 300_000))  # nobody reads on the other side
    assert trio.current_time() - started == pytest.approx(SILENCE_SECONDS, abs=0.5)
    with pytest.raises(LinkClosed):  # and at once afterwards
        await a.send(WorkRequest(credits=1, job_id=JOB))


async def test_close_tells_the_peer_why_in_an_authenticated_record() -> None:
    a, b = await linked(lockstep=False)
    await a.send(WorkRequest(credits=1, job_id=JOB))
    await a.aclose("donation switched off")
    got = await receive(b, 2)
    assert got[0] == WorkRequest(credits=1, job_id=JOB)
    closed = got[1]
    assert isinstance(closed, ConnectionClosed)
    assert closed.clean and closed.reason == "donation switched off"


async def test_sending_on_a_closed_connection_is_link_closed() -> None:
    """A connection the protocol already closed raises LinkClosed to callers, never the
    protocol's own error (which used to escape `send_many` and stop a donating chief)."""
    a, _b = await linked(lockstep=False)
    a.conn.close("gone")  # as when the peer's close or a bad record ended it
    with pytest.raises(LinkClosed):
        await a.send_many([WorkRequest(credits=1, job_id=JOB)])


async def test_a_reset_stream_is_link_closed() -> None:
    a, b = await linked(lockstep=False)
    await b.stream.aclose()
    await a.stream.aclose()
    with pytest.raises(LinkClosed):
        await a.send(WorkRequest(credits=1, job_id=JOB))


async def test_a_process_woken_from_a_freeze_reads_before_it_calls_its_peer_silent(
        autojump_clock: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGSTOP for longer than SILENCE_SECONDS: on waking, what the peer sent meanwhile
    is still unread, so the first check sends a heartbeat instead of dropping the peer;
    a peer that really stays silent is dropped at the next one."""
    a, b = await linked(lockstep=False)
    frozen = [0.0]  # the process's own clock jumps: time that trio's clock did not see
    monkeypatch.setattr(_peer, "time", types.SimpleNamespace(
        monotonic=lambda: trio.current_time() + frozen[0]))
    a.last_heard = a.last_sent = _peer.time.monotonic()
    start = trio.current_time()

    async def freeze() -> None:
        await trio.sleep(1)
        frozen[0] = 2 * SILENCE_SECONDS

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(freeze)
            nursery.start_soon(a._heartbeats, scope)
            got = await receive(b, 1)
            woke = trio.current_time()
            await trio.sleep(100)  # until the next check drops the peer: a never read
    assert isinstance(got[0], Heartbeat)
    assert woke - start == pytest.approx(HEARTBEAT_SECONDS)
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(2 * HEARTBEAT_SECONDS)


async def test_a_link_that_carries_messages_sends_no_heartbeat(
        autojump_clock: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chief's links to its working donors carry fragments and results all the time:
    those say the node is there, and a heartbeat on each would be per-peer work for
    nothing (issue 15). Once the link goes quiet, heartbeats come back on time."""
    a, b = await linked(lockstep=False)
    monkeypatch.setattr(_peer, "time", types.SimpleNamespace(monotonic=trio.current_time))
    a.last_heard = a.last_sent = trio.current_time()
    got: list[tuple[float, Message | ConnectionClosed]] = []
    start = trio.current_time()

    async def busy() -> None:
        for _ in range(20):  # 20 s of traffic, a message every second
            await trio.sleep(1)
            await a.send(WorkRequest(credits=1, job_id=JOB))
            a.last_heard = trio.current_time()  # and it hears from b, as from a donor

    async def read() -> None:
        while True:
            (message,) = await receive(b, 1)
            got.append((trio.current_time() - start, message))

    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a._heartbeats, scope)
            nursery.start_soon(read)
            await busy()
            await trio.sleep(2 * HEARTBEAT_SECONDS + 0.5)
            nursery.cancel_scope.cancel()
    beats = [t for t, m in got if isinstance(m, Heartbeat)]
    assert len(got) - len(beats) == 20
    assert beats == [pytest.approx(20 + HEARTBEAT_SECONDS),
                     pytest.approx(20 + 2 * HEARTBEAT_SECONDS)]
    assert not scope.cancelled_caught  # the peer was heard: not dropped
