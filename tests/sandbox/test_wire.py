"""The node<->child pipe framing: bounded before allocation, garbage is an error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox._wire import FrameDecoder, WireError, pack


def test_round_trip_split_across_reads() -> None:
    msgs = [["result", 3, b"\x00" * 1000, "out"], ["ready", {"pid": 7}]]
    data = b"".join(pack(m) for m in msgs)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(data), 7):
        got.extend(dec.feed(data[i : i + 7]))
    assert got == msgs
    assert dec.pending == 0


def test_huge_length_prefix_is_refused_before_allocation() -> None:
    dec = FrameDecoder(max_frame=1 << 20)
    with pytest.raises(WireError, match="exceeds"):
        dec.feed(b"\xff\xff\xff\xff")


@given(st.binary(max_size=200))
def test_garbage_raises_only_wire_error(data: bytes) -> None:
    dec = FrameDecoder(max_frame=1 << 16)
    try:
        dec.feed(data)
    except WireError:
        pass
