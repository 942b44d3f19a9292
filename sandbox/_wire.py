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
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
#: Largest frame either side accepts unless told otherwise (a u32 length caps it anyway).
DEFAULT_MAX_FRAME = (1 << 31) - 1


class WireError(Exception):
    """The other end of a child pipe sent something that is not a valid frame."""


def pack(message: list[Any] | tuple[Any, ...]) -> bytes:
    """Encode one message as a length-prefixed msgpack frame."""
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def unpack_body(body: bytes | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> list[Any]:
    """Decode the body of one frame; the result is always a non-empty list."""
    try:
        message = msgpack.unpackb(
            body,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=min(max_frame, 1 << 24),
            max_map_len=1 << 16,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"undecodable frame: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise WireError("a frame must be a non-empty array starting with its kind")
    return message


class FrameDecoder:
    """Incremental decoder: feed bytes, get whole messages; bounded by ``max_frame``."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame

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
            out.append(unpack_body(memoryview(self._buf)[HEADER.size : end], self._max))
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
