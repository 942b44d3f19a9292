"""Helpers for the protocol tests: fixed randomness, identities, paired connections."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable

from protocol import (
    Connection,
    ConnectionClosed,
    Event,
    HandshakeComplete,
    Message,
    MessageReceived,
    NodeIdentity,
    Role,
)

SECRET = bytes(range(32))
OTHER_SECRET = bytes(range(1, 33))


def fixed_rng(seed: bytes) -> Callable[[int], bytes]:
    """Deterministic 'randomness' for known-answer tests: SHAKE-256 of seed and a counter."""
    counter = itertools.count()

    def rng(size: int) -> bytes:
        return hashlib.shake_256(seed + next(counter).to_bytes(8, "big")).digest(size)

    return rng


def identity(name: str) -> NodeIdentity:
    """A fixed identity per name."""
    return NodeIdentity(hashlib.blake2b(name.encode(), digest_size=32).digest())


ALICE = identity("alice")
BOB = identity("bob")
MALLORY = identity("mallory")


def handshake(initiator: Connection, responder: Connection) -> tuple[Event, Event]:
    """Pass handshake bytes between the two until both complete; return both events."""
    responder.receive_data(initiator.data_to_send())
    assert responder.next_event() is None
    initiator.receive_data(responder.data_to_send())
    first = initiator.next_event()
    responder.receive_data(initiator.data_to_send())
    second = responder.next_event()
    return first, second  # type: ignore[return-value]


def pair(**kwargs: object) -> tuple[Connection, Connection]:
    """An initiator (ALICE) and a responder (BOB), handshake done."""
    initiator_kw = {"swarm_secret": SECRET, **kwargs}
    responder_kw = {"swarm_secret": SECRET, **kwargs}
    a = Connection(Role.INITIATOR, ALICE, rng=fixed_rng(b"a"), **initiator_kw)  # type: ignore[arg-type]
    b = Connection(Role.RESPONDER, BOB, rng=fixed_rng(b"b"), **responder_kw)  # type: ignore[arg-type]
    done_a, done_b = handshake(a, b)
    assert isinstance(done_a, HandshakeComplete) and isinstance(done_b, HandshakeComplete)
    return a, b


def deliver(sender: Connection, receiver: Connection, message: Message) -> Message:
    """Send one message across and return what the receiver got."""
    receiver.receive_data(sender.send(message))
    event = receiver.next_event()
    assert isinstance(event, MessageReceived), event
    return event.message


def frames(data: bytes) -> list[bytes]:
    """Split a byte stream into its frames (prefix included)."""
    out = []
    while data:
        size = 4 + int.from_bytes(data[:4], "big")
        out.append(data[:size])
        data = data[size:]
    return out


def closed(event: Event | None) -> ConnectionClosed:
    assert isinstance(event, ConnectionClosed), event
    return event
