"""Connections after the handshake: messages both ways, and every attack on the channel."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Connection,
    ConnectionClosed,
    Envelope,
    EnvelopeError,
    EnvelopeKind,
    Fragment,
    Heartbeat,
    Hello,
    LocalProtocolError,
    Message,
    MessageReceived,
    PackageChunk,
    RemoteProtocolError,
    Role,
    State,
    Task,
)
from protocol._schema import INLINE_BLOB

from .strategies import any_message
from .support import (
    ALICE,
    BOB,
    MALLORY,
    SECRET,
    closed,
    deliver,
    fixed_rng,
    frames,
    handshake,
    pair,
)

BEAT = Heartbeat(seq=1, donating=True, free_cores=4)


def test_known_answer_first_records() -> None:
    a, b = pair()
    assert a.send(BEAT).hex() == "000000171be4ee427cb82c8d9d65a56c64d1a27bb8941f6226e398"
    assert b.send(BEAT).hex() == "000000172af4a48052b6ffe10002d75e34fd6df55ed89b04863b1f"


@settings(max_examples=150, deadline=None)
@given(st.lists(any_message, min_size=1, max_size=4), st.integers(1, 97))
def test_messages_cross_in_any_chunking(messages: list[Message], chunk: int) -> None:
    a, b = pair(verify_envelopes=False)
    for sender, receiver in ((a, b), (b, a)):
        stream = b"".join(sender.send(m) for m in messages)
        received = []
        step = max(chunk, len(stream) // 300)  # large blobs: a few hundred pieces at most
        for start in range(0, len(stream), step):
            receiver.receive_data(stream[start : start + step])
            while (event := receiver.next_event()) is not None:
                assert isinstance(event, MessageReceived)
                received.append(event.message)
        assert received == messages


def test_send_parts_keep_a_large_payload_uncopied() -> None:
    a, b = pair()
    data = bytes(INLINE_BLOB + 1000)
    parts = a.send_parts(PackageChunk(bytes(32), 0, len(data), data))
    assert len(parts) == 2 and len(parts[1]) == len(data) + 17
    for part in parts:
        b.receive_data(part)
    event = b.next_event()
    assert isinstance(event, MessageReceived)
    assert event.message.data == data  # type: ignore[attr-defined]


def test_envelopes_must_be_signed_by_the_peer() -> None:
    a, b = pair()
    own = Envelope.sign(ALICE, EnvelopeKind.FRAGMENT, bytes(16), 1, b"x", bytes(32))
    assert deliver(a, b, Fragment(Task.PROCESS, own)) == Fragment(Task.PROCESS, own)
    foreign = Envelope.sign(MALLORY, EnvelopeKind.FRAGMENT, bytes(16), 2, b"x", bytes(32))
    b.receive_data(a.send(Fragment(Task.PROCESS, foreign)))
    with pytest.raises(EnvelopeError, match="author is"):
        b.next_event()


def test_flipped_bit_in_a_record_ends_the_channel() -> None:
    a, b = pair()
    record = bytearray(a.send(BEAT))
    record[10] ^= 0x01
    b.receive_data(bytes(record))
    with pytest.raises(RemoteProtocolError, match="failed to decrypt"):
        b.next_event()
    assert b.state is State.FAILED
    with pytest.raises(RemoteProtocolError):  # and it stays failed
        b.next_event()


@pytest.mark.parametrize("position", range(4 + 6))  # every prefix byte, some record bytes
def test_every_flipped_bit_is_caught(position: int) -> None:
    for bit in range(8):
        a, b = pair()
        record = bytearray(a.send(BEAT) + a.send(BEAT))
        record[position] ^= 1 << bit
        b.receive_data(bytes(record))
        b.receive_data(b"")
        with pytest.raises(RemoteProtocolError):
            while b.next_event() is not None:
                pass


def test_replayed_record_ends_the_channel() -> None:
    a, b = pair()
    record = a.send(BEAT)
    b.receive_data(record)
    assert isinstance(b.next_event(), MessageReceived)
    b.receive_data(record)
    with pytest.raises(RemoteProtocolError, match="replayed"):
        b.next_event()


def test_reordered_records_end_the_channel() -> None:
    a, b = pair()
    first, second = a.send(BEAT), a.send(Heartbeat(2, True, 4))
    b.receive_data(second + first)
    with pytest.raises(RemoteProtocolError, match="reordered"):
        b.next_event()


def test_dropped_record_ends_the_channel() -> None:
    a, b = pair()
    a.send(BEAT)  # lost
    b.receive_data(a.send(BEAT))
    with pytest.raises(RemoteProtocolError):
        b.next_event()


def test_truncated_record_is_an_error() -> None:
    a, b = pair()
    record = a.send(BEAT)
    b.receive_data(record[:-3])
    assert b.next_event() is None
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="cut in the middle of a record"):
        b.next_event()


def test_truncated_blob_is_an_error() -> None:
    a, b = pair()
    head, blob = a.send_parts(PackageChunk(bytes(32), 0, 1, bytes(INLINE_BLOB + 1)))
    b.receive_data(head)
    assert b.next_event() is None
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="cut in the middle"):
        b.next_event()


def test_cutting_the_stream_short_is_not_a_clean_close() -> None:
    """Without the authenticated final record, an EOF is reported as unclean."""
    a, b = pair()
    b.receive_data(a.send(BEAT))
    a.close("done")  # the final record is dropped by an attacker
    b.receive_data(b"")
    assert isinstance(b.next_event(), MessageReceived)
    event = closed(b.next_event())
    assert not event.clean


def test_clean_close_both_ways() -> None:
    a, b = pair()
    b.receive_data(a.send(BEAT) + a.close("job done"))
    assert isinstance(b.next_event(), MessageReceived)
    assert closed(b.next_event()) == ConnectionClosed("job done", clean=True)
    assert (a.state, b.state) == (State.LOCAL_CLOSED, State.REMOTE_CLOSED)
    with pytest.raises(LocalProtocolError):
        a.send(BEAT)
    a.receive_data(b.send(BEAT) + b.close())  # half-closed: b may still send
    assert isinstance(a.next_event(), MessageReceived)
    assert closed(a.next_event()).clean
    assert a.state is b.state is State.CLOSED
    assert a.close() == b"" and b.close() == b""  # idempotent
    assert closed(b.next_event()).reason == "job done"  # repeated, like h11


def test_data_after_the_peers_final_record_is_an_error() -> None:
    a, b = pair()
    b.receive_data(a.close())
    closed(b.next_event())
    b.receive_data(b"\x00\x00\x00\x20" + bytes(32))
    with pytest.raises(RemoteProtocolError, match="after closing"):
        b.next_event()


def test_eof_without_close_is_reported_unclean() -> None:
    a, b = pair()
    b.receive_data(b"")
    event = closed(b.next_event())
    assert not event.clean and b.state is State.CLOSED


def test_misuse_is_a_local_error() -> None:
    a = Connection(Role.INITIATOR, ALICE, swarm_secret=SECRET, rng=fixed_rng(b"x"))
    with pytest.raises(LocalProtocolError, match="cannot send a message in state AWAIT_MSG2"):
        a.send(BEAT)
    with pytest.raises(LocalProtocolError, match="exactly one"):
        Connection(Role.INITIATOR, ALICE)
    with pytest.raises(LocalProtocolError, match="32 bytes"):
        Connection(Role.INITIATOR, ALICE, swarm_secret=b"short")
    a, b = pair()
    with pytest.raises(LocalProtocolError, match="takes a Message"):
        a.send(b"raw bytes")  # type: ignore[arg-type]
    b.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after EOF"):
        b.receive_data(b"more")


def test_closing_during_the_handshake_sends_nothing() -> None:
    a = Connection(Role.INITIATOR, ALICE, swarm_secret=SECRET, rng=fixed_rng(b"x"))
    assert a.close() == b""
    assert a.state is State.CLOSED
    assert closed(a.next_event()).reason == "closed by this side"


def test_payload_limits_hold_on_both_sides() -> None:
    big = bytes(2 * INLINE_BLOB)
    a = Connection(Role.INITIATOR, ALICE, swarm_secret=SECRET, rng=fixed_rng(b"a"))
    b = Connection(Role.RESPONDER, BOB, swarm_secret=SECRET, rng=fixed_rng(b"b"),
                   max_message_size=INLINE_BLOB + 10)
    handshake(a, b)
    with pytest.raises(LocalProtocolError, match="exceeds max_message_size"):
        b.send(PackageChunk(bytes(32), 0, len(big), big))
    head, _blob = a.send_parts(PackageChunk(bytes(32), 0, len(big), big))
    b.receive_data(head)  # refused from the head alone, before the blob is read
    with pytest.raises(RemoteProtocolError, match="announces a blob of 262144 bytes"):
        b.next_event()


def test_rekeying_is_transparent() -> None:
    a, b = pair(rekey_records=3)
    for seq in range(10):
        assert deliver(a, b, Heartbeat(seq, True, 1)) == Heartbeat(seq, True, 1)
    assert a._channel is not None and b._channel is not None
    assert a._channel.rekeys_sent == b._channel.rekeys_received == 3


def test_rekeying_by_bytes() -> None:
    a, b = pair(rekey_bytes=1000)
    hello = Hello("n" * 60, "octop2p", 2, True, modules=tuple("m" * 50 for _ in range(30)))
    for _ in range(3):
        deliver(a, b, hello)
    assert b._channel is not None and b._channel.rekeys_received == 3


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 10_000),
    st.sampled_from(["flip", "drop", "duplicate", "truncate"]),
    st.integers(0, 7),
)
def test_damaged_channel_streams_never_deliver_wrong_messages(
    position: int, how: str, bit: int
) -> None:
    a, b = pair()
    sent = [Heartbeat(i, bool(i % 2), i) for i in range(5)]
    stream = bytearray(b"".join(a.send(m) for m in sent))
    i = position % len(stream)
    if how == "flip":
        stream[i] ^= 1 << bit
    elif how == "drop":
        del stream[i : i + 1 + bit]
    elif how == "duplicate":
        parts = frames(bytes(stream))
        parts.insert(position % len(parts), parts[position % len(parts)])
        stream = bytearray(b"".join(parts))
    else:
        del stream[i:]
    b.receive_data(bytes(stream))
    b.receive_data(b"")
    received = []
    with pytest.raises(RemoteProtocolError):
        while True:
            event = b.next_event()
            if isinstance(event, ConnectionClosed):
                break
            assert isinstance(event, MessageReceived)
            received.append(event.message)
        raise RemoteProtocolError("stream ended")  # truncation at a frame boundary
    assert received == sent[: len(received)]
