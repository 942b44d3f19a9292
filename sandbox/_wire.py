"""Framing for the pipes between the node and a sandboxed child.

A frame is a 4-byte big-endian length followed by a msgpack array ``[kind, ...]``.
Payload fields are ``bytes`` (pickles made and read only inside children); the node
moves them without looking inside. The node treats everything a child writes as
untrusted: the length is checked before anything is allocated, and msgpack is decoded
with every container bounded and extension types refused.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
#: Largest frame either side accepts unless told otherwise (a u32 length caps it anyway).
DEFAULT_MAX_FRAME = (1 << 31) - 1


class WireError(Exception):
    """The other end of a child pipe sent something that is not a valid frame."""


@dataclass(frozen=True)
class Shape:
    """How much structure one frame may hold, checked before msgpack builds anything.

    A length prefix bounds a frame's bytes, not what decoding makes of them: each byte
    0x90 is an empty list of 56 bytes, so 64 MiB of them would become gigabytes in the
    node. `check_shape` walks the frame without building it and refuses it past these.
    """

    max_objects: int  # every value in the frame, containers and what they hold
    max_depth: int  # containers inside containers
    max_map_len: int  # pairs in one map


#: What a child may send the node (docs/architecture.md, "The pipe protocol"): a frame is
#: a few fields, at most one list (the fragments of a split reply, at most 256; the
#: partitions of a map task, one per reduce task) and one small map (`ready`, `error`
#: info: six keys), three levels deep. The bounds leave room above that, and keep a
#: hostile frame under about 5 MB of Python objects whatever its size.
CHILD_REPLY = Shape(max_objects=1 << 16, max_depth=8, max_map_len=32)

# Formats by their first byte (the msgpack spec), for `check_shape`.
_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}  # nil, bools, floats, ints: bytes that follow
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin, str: length's width
_ARRAYS = {0xDC: 2, 0xDD: 4}  # array 16 and 32: the count's width
_MAPS = {0xDE: 2, 0xDF: 4}


def check_shape(body: bytes | memoryview, shape: Shape) -> None:
    """Refuse a frame that holds more values or nesting than `shape`; allocates nothing.

    Costs one step per value, so at most `shape.max_objects` steps whatever the frame.
    Anything that is not plain msgpack (ext types, the unused byte 0xc1) is refused too.
    """
    pos, end, objects = 0, len(body), 0
    left = [1]  # values still to read in each open container, the frame itself first
    while left:
        if not left[-1]:
            left.pop()
            continue
        left[-1] -= 1
        objects += 1
        if objects > shape.max_objects:
            raise WireError(f"a frame holds more than {shape.max_objects} values")
        if pos >= end:
            raise WireError("a frame ends in the middle of a value")
        first = body[pos]
        pos += 1
        if first < 0x80 or first >= 0xE0:  # fixint
            continue
        if first < 0x90:  # fixmap
            count = (first & 0x0F) * 2
        elif first < 0xA0:  # fixarray
            count = first & 0x0F
        elif first < 0xC0:  # fixstr
            pos += first & 0x1F
            continue
        elif first in _FIXED:
            pos += _FIXED[first]
            continue
        elif first in _SIZED:
            width = _SIZED[first]
            pos += width + int.from_bytes(body[pos : pos + width], "big")
            continue
        elif first in _ARRAYS or first in _MAPS:
            width = _ARRAYS.get(first) or _MAPS[first]
            count = int.from_bytes(body[pos : pos + width], "big")
            pos += width
            if first in _MAPS:
                if count > shape.max_map_len:
                    raise WireError(f"a map in a frame has more than {shape.max_map_len} keys")
                count *= 2
        else:
            raise WireError(f"a frame holds a value of type 0x{first:02x}, which is not allowed")
        if count:
            if objects + count > shape.max_objects:  # said in its header: refuse at once
                raise WireError(f"a frame holds more than {shape.max_objects} values")
            if len(left) > shape.max_depth:
                raise WireError(f"a frame nests containers deeper than {shape.max_depth}")
            left.append(count)


def pack(message: list[Any] | tuple[Any, ...]) -> bytes:
    """Encode one message as a length-prefixed msgpack frame."""
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack_body(
    body: bytes | memoryview, max_frame: int = DEFAULT_MAX_FRAME, shape: Shape | None = None
) -> list[Any]:
    """Decode the body of one frame; the result is always a non-empty list.

    With `shape`, the frame's structure is checked first (`check_shape`).
    """
    if shape is not None:
        check_shape(body, shape)
    try:
        message = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=min(max_frame, 1 << 24, shape.max_objects if shape else 1 << 24),
            max_map_len=shape.max_map_len if shape else 1 << 16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"undecodable frame: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise WireError("a frame must be a non-empty array starting with its kind")
    return message


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages; bounded by ``max_frame``.

    ``shape`` bounds what each frame may hold once decoded; the node passes
    `CHILD_REPLY` for what a child sends.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, shape: Shape | None = None) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._shape = shape

    def feed(self, data: bytes) -> list[list[Any]]:
        """Add bytes read from the pipe and return every message now complete."""
        self._buf += data
        out: list[list[Any]] = []
        while len(self._buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self._buf)
            if length > self._max:
                raise WireError(f"frame of {length} bytes exceeds the limit of {self._max}")
            end = HEADER.size + length
            if len(self._buf) < end:
                break
            body = memoryview(self._buf)[HEADER.size : end]
            try:
                out.append(unpack_body(body, self._max, self._shape))
            finally:
                body.release()  # a live view would stop the buffer from shrinking below
            del self._buf[:end]
        return out

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buf)


def read_exact(fd: int, n: int) -> bytes:
    """Blocking read of exactly ``n`` bytes (child side); raises EOFError on a closed pipe."""
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(fd: int, max_frame: int = DEFAULT_MAX_FRAME) -> list[Any]:
    """Blocking read of one whole message from ``fd`` (child and fork-server side)."""
    (length,) = HEADER.unpack(read_exact(fd, HEADER.size))
    if length > max_frame:
        raise WireError(f"frame of {length} bytes exceeds the limit of {max_frame}")
    return unpack_body(read_exact(fd, length), max_frame)


def write_message(fd: int, message: list[Any] | tuple[Any, ...]) -> None:
    """Blocking write of one whole message to ``fd``."""
    data = memoryview(pack(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]
