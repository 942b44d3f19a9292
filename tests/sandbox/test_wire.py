"""The node<->child pipe framing: bounded before allocation, garbage is an error."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandbox._wire import CHILD_REPLY, FrameDecoder, WireError, check_shape, pack


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


# --- structure: what a frame decodes to --------------------------------------------------


def _frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def test_every_reply_of_the_pipe_protocol_fits_the_child_shape() -> None:
    replies = [
        ["ready", {"pid": 7, "out": ""}],
        ["fragments", [b"x" * 10] * 256, False, "printed"],
        ["result", 3, b"\x00" * 100_000, ""],
        ["mapped", 4, [b"part"] * 4096, ""],
        ["merged", 9, ""],
        ["error", None, {"rule": "files", "message": "m", "traceback": "t", "file": None,
                         "line": 3, "out": ""}],
    ]
    dec = FrameDecoder(1 << 20, CHILD_REPLY)
    assert dec.feed(b"".join(pack(r) for r in replies)) == replies


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        # 4 MiB of empty lists: one 56-byte list object per byte, once decoded
        (b"\x92\xa5error\xdd\x00\x3f\xff\xff" + b"\x90" * 0x3FFFFF, "more than 65536 values"),
        (b"\x91" * 9 + b"\xc0", "deeper than 8"),  # [[[[...]]]]
        (b"\x92\xa3out\xde\x01\x00" + b"\x00\x00" * 256, "more than 32 keys"),
        (b"\x92\xa3out\xc7\x01\x05x", "not allowed"),  # an ext type
        (b"\x92\xa3out\xdd\xff\xff\xff\xff", "more than 65536 values"),  # a count, no items
        (b"\x92\xa3out", "ends in the middle"),
    ],
)
def test_frames_past_the_child_shape_are_refused(body: bytes, refusal: str) -> None:
    dec = FrameDecoder(8 << 20, CHILD_REPLY)
    with pytest.raises(WireError, match=refusal):
        dec.feed(_frame(body))


def test_the_shape_check_walks_at_most_its_bound() -> None:
    """Lists of 15 empty lists, each header within bounds: refused by counting values,
    after 65,536 steps, however much of the frame is left."""
    body = b"\xdc\x10\x04" + (b"\x9f" + b"\x90" * 15) * 0x1004 + b"\x90" * (64 << 20)
    started = time.process_time()
    with pytest.raises(WireError, match="more than 65536 values"):
        check_shape(body, CHILD_REPLY)
    assert time.process_time() - started < 2  # about 30 ms here; the frame is 64 MiB
    fits = b"\xdc\x0f\xa0" + (b"\x9f" + b"\x90" * 15) * 4000  # 64,001 values: decodes
    check_shape(fits, CHILD_REPLY)


@given(st.binary(max_size=200))
def test_garbage_under_a_shape_raises_only_wire_error(data: bytes) -> None:
    dec = FrameDecoder(max_frame=1 << 16, shape=CHILD_REPLY)
    try:
        dec.feed(_frame(data))
    except WireError:
        pass
