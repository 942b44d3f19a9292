"""Framing: any chunking, limits checked before allocating, garbage is a remote error."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import RemoteProtocolError
from protocol._framing import FrameDecoder, frame_prefix


def encode(bodies: list[bytes]) -> bytes:
    return b"".join(frame_prefix(len(body)) + body for body in bodies)


def drain(decoder: FrameDecoder) -> list[bytes]:
    out = []
    while (frame := decoder.next_frame()) is not None:
        out.append(frame)
    return out


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=300), max_size=8),
    st.lists(st.integers(1, 50), min_size=1, max_size=40),
)
def test_any_chunking_gives_the_same_frames(bodies: list[bytes], sizes: list[int]) -> None:
    stream = encode(bodies)
    decoder = FrameDecoder(1000)
    got: list[bytes] = []
    position, i = 0, 0
    while position < len(stream):
        size = sizes[i % len(sizes)]
        decoder.feed(stream[position : position + size])
        position, i = position + size, i + 1
        got += drain(decoder)
    assert got == bodies
    assert decoder.buffered == 0


def test_a_frame_that_arrives_whole_is_not_copied() -> None:
    body = bytes(100_000)
    decoder = FrameDecoder(200_000)
    decoder.feed(frame_prefix(len(body)))
    decoder.feed(body)
    assert decoder.next_frame() is body


def test_a_4_gb_length_costs_nothing() -> None:
    decoder = FrameDecoder(1 << 20)
    tracemalloc.start()
    try:
        decoder.feed(b"\xff\xff\xff\xff" + b"x" * 10)
        with pytest.raises(RemoteProtocolError, match="4294967295 bytes exceeds the limit"):
            decoder.next_frame()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000


def test_limit_applies_before_the_body_arrives() -> None:
    decoder = FrameDecoder(100)
    decoder.feed(frame_prefix(101))  # no body at all yet: refused at once
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_exact_size_is_enforced() -> None:
    decoder = FrameDecoder(1000)
    decoder.set_limit(1000, exact=10, what="the blob")
    decoder.feed(frame_prefix(11))
    with pytest.raises(RemoteProtocolError, match="the blob is 11 bytes, 10 were announced"):
        decoder.next_frame()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(1, 64))
def test_random_bytes_raise_only_remote_errors_with_bounded_memory(
    data: bytes, chunk: int
) -> None:
    decoder = FrameDecoder(1 << 16)
    tracemalloc.start()
    try:
        for start in range(0, len(data), chunk):
            decoder.feed(data[start : start + chunk])
            drain(decoder)
    except RemoteProtocolError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 3 * len(data) + 20_000
