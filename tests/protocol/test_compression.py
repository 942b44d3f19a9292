"""Large blobs travel deflated when the peer offers it and it pays; bombs are refused."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    COMPRESSION,
    Connection,
    Envelope,
    EnvelopeKind,
    Fragment,
    Hello,
    MessageReceived,
    PackageChunk,
    RemoteProtocolError,
    Task,
)
from protocol._schema import INLINE_BLOB

from .support import ALICE, deliver, frames, pair

TEXT = b"the quick brown fox jumps over the lazy dog\n" * 20_000  # 880 KB of text


def hello(*features: str) -> Hello:
    return Hello(name="n", software="octop2p test", cores=1, donating=True, features=features)


def offered() -> tuple[Connection, Connection]:
    """A pair where b has told a that it accepts compressed blobs."""
    a, b = pair()
    deliver(b, a, hello(COMPRESSION))
    assert a.compress_to_peer
    return a, b


def chunk(data: bytes) -> PackageChunk:
    return PackageChunk(bytes(32), 0, len(data), data)


def blob_record_size(sender: Connection, message: PackageChunk) -> int:
    parts = sender.send_parts(message)
    return len(frames(b"".join(parts))[-1]) - 4 - 17


def test_no_compression_unless_the_peer_offers_it() -> None:
    a, b = pair()
    deliver(b, a, hello())
    assert blob_record_size(a, chunk(TEXT)) == len(TEXT)


def test_no_compression_where_the_sender_does_not_allow_it() -> None:
    """The peer offers zlib, but this side's own choice (a link within one host) wins:
    the blob travels as it is, and arrives whole."""
    a, b = offered()
    a.compress_allowed = False
    assert blob_record_size(a, chunk(TEXT)) == len(TEXT)
    a2, b2 = offered()
    a2.compress_allowed = False
    assert deliver(a2, b2, chunk(TEXT)) == chunk(TEXT)


def test_large_text_travels_deflated_and_arrives_whole() -> None:
    a, b = offered()
    assert blob_record_size(a, chunk(TEXT)) < len(TEXT) // 10
    a2, b2 = offered()
    assert deliver(a2, b2, chunk(TEXT)) == chunk(TEXT)


def test_small_and_incompressible_blobs_travel_as_they_are() -> None:
    a, b = offered()
    small = TEXT[: INLINE_BLOB - 1000]  # inline in the head: never compressed
    assert len(frames(b"".join(a.send_parts(chunk(small))))) == 1  # one record: the head
    assert len(a.send(chunk(small))) > len(small)
    noise = os.urandom(INLINE_BLOB * 2)
    assert blob_record_size(a, chunk(noise)) == len(noise)
    a2, b2 = offered()
    assert deliver(a2, b2, chunk(noise)) == chunk(noise)


def test_signed_envelopes_verify_after_inflating() -> None:
    a, b = offered()
    envelope = Envelope.sign(
        ALICE, EnvelopeKind.FRAGMENT, job_id=bytes(16), seq=7, ref=bytes(32), payload=TEXT
    )
    got = deliver(a, b, Fragment(Task.PROCESS, envelope))
    assert isinstance(got, Fragment) and got.envelope.payload == TEXT


def forged_blob(a: Connection, inflated: int, record: bytes) -> list[bytes]:
    """A PackageChunk whose head announces ``inflated`` bytes and whose record is ``record``.

    The peer is authenticated (it holds the session keys): only its sizes lie.
    """
    assert a._channel is not None
    head = [8, 1, bytes(32), 0, inflated, [inflated, len(record)]]
    sealed_head = a._channel.seal(msgpack.packb(head, use_bin_type=True))
    sealed_blob = a._channel.seal(record)
    return [len(sealed_head).to_bytes(4, "big") + sealed_head,
            len(sealed_blob).to_bytes(4, "big") + sealed_blob]


def test_a_decompression_bomb_fails_without_allocating_it() -> None:
    a, b = offered()
    bomb = zlib.compress(bytes(64 << 20), 9)  # 64 MiB of zeros in about 64 KiB
    parts = forged_blob(a, INLINE_BLOB + 1, bomb)
    tracemalloc.start()
    try:
        for part in parts:
            b.receive_data(part)
        with pytest.raises(RemoteProtocolError, match="does not inflate to the"):
            b.next_event()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the announced size and the record, not 64 MiB


def test_an_inflated_size_over_the_limit_is_refused_from_the_head() -> None:
    a, b = offered()
    head, _ = forged_blob(a, 1 << 40, b"x" * 1000)
    b.receive_data(head)
    with pytest.raises(RemoteProtocolError, match="compressed blob"):
        b.next_event()


def test_corrupt_compressed_data_is_the_peers_error() -> None:
    a, b = offered()
    for part in forged_blob(a, INLINE_BLOB + 10, b"\x78\x01" + os.urandom(5000)):
        b.receive_data(part)
    with pytest.raises(RemoteProtocolError, match="compressed blob"):
        b.next_event()


def test_a_short_inflation_is_refused() -> None:
    a, b = offered()
    packed = zlib.compress(TEXT[: INLINE_BLOB * 2], 1)
    for part in forged_blob(a, INLINE_BLOB * 3, packed):
        b.receive_data(part)
    with pytest.raises(RemoteProtocolError, match="does not inflate"):
        b.next_event()
    with pytest.raises(RemoteProtocolError):  # the channel stays failed
        b.next_event()


@settings(max_examples=25, deadline=None)
@given(step=st.integers(1, 200_000), text=st.binary(min_size=1, max_size=64))
def test_compressed_blobs_cross_in_any_chunking(step: int, text: bytes) -> None:
    a, b = offered()
    data = text * (3 * INLINE_BLOB // len(text) + 1)  # repetitive: it will be deflated
    stream = a.send(chunk(data))
    assert len(stream) < len(data)
    for start in range(0, len(stream), step):
        b.receive_data(stream[start : start + step])
    assert b.next_event() == MessageReceived(chunk(data))
