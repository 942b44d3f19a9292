"""Length-prefixed frames: a u32 big-endian length, then that many bytes.

The decoder checks the length against the current limit as soon as the four prefix bytes
are in, before it allocates or waits for anything, so a prefix claiming 4 GB costs
nothing: it is an immediate `RemoteProtocolError`. The limit changes with the connection's
state (small during the handshake; the announced size before a blob record).

Received data is kept as the caller's chunks, not copied into one growing buffer. A frame
that arrives as exactly one chunk is returned as that very object; one that spans chunks
is joined once.
"""

from __future__ import annotations

from collections import deque

from ._errors import LocalProtocolError, RemoteProtocolError

PREFIX_BYTES = 4
MAX_FRAME = 2**32 - 1


def frame_prefix(length: int) -> bytes:
    """The 4-byte prefix of a frame of `length` bytes."""
    if not 0 <= length <= MAX_FRAME:
        raise LocalProtocolError(f"a frame of {length} bytes cannot be sent")
    return length.to_bytes(PREFIX_BYTES, "big")


class FrameDecoder:
    """Turns a byte stream, fed in chunks of any size, into frames."""

    def __init__(self, max_size: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # bytes of _chunks[0] already consumed
        self._buffered = 0  # bytes held and not consumed
        self._length: int | None = None  # size of the frame being read, once known
        self._max_size = max_size
        self._exact: int | None = None
        self._what = "frame"

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (prefix of a pending frame included)."""
        return self._buffered + (PREFIX_BYTES if self._length is not None else 0)

    def set_limit(self, max_size: int, *, exact: int | None = None, what: str = "frame") -> None:
        """Limit the next frames to `max_size` bytes, or require exactly `exact` bytes.

        `what` names the frame in the error message. Applies to a frame whose prefix is
        read from now on.
        """
        self._max_size, self._exact, self._what = max_size, exact, what

    def feed(self, data: bytes) -> None:
        """Add received bytes (the decoder keeps a reference, so pass immutable bytes)."""
        if data:
            self._chunks.append(data)
            self._buffered += len(data)

    def next_frame(self) -> bytes | None:
        """The next complete frame, or None until more data is fed."""
        if self._length is None:
            if self._buffered < PREFIX_BYTES:
                return None
            length = int.from_bytes(self._take(PREFIX_BYTES), "big")
            if self._exact is not None and length != self._exact:
                raise RemoteProtocolError(
                    f"{self._what} is {length} bytes, {self._exact} were announced"
                )
            if length > self._max_size:
                raise RemoteProtocolError(
                    f"{self._what} of {length} bytes exceeds the limit of {self._max_size}"
                )
            self._length = length
        if self._buffered < self._length:
            return None
        frame = self._take(self._length)
        self._length = None
        return frame

    def _take(self, size: int) -> bytes:
        """Remove and return the next `size` buffered bytes (there are at least that many)."""
        if size == 0:
            return b""
        self._buffered -= size
        first = self._chunks[0]
        start = self._offset
        end = start + size
        if end < len(first):
            self._offset = end
            return first[start:end]
        if end == len(first):
            self._chunks.popleft()
            self._offset = 0
            # A frame that is a whole chunk (as `send_parts` writes large records) is
            # handed on as is: no copy at all.
            return first if start == 0 else first[start:]
        pieces: list[memoryview | bytes] = []
        while size:
            chunk = self._chunks[0]
            piece = memoryview(chunk)[self._offset : self._offset + size]
            size -= len(piece)
            pieces.append(piece)
            if self._offset + len(piece) == len(chunk):
                self._chunks.popleft()
                self._offset = 0
            else:
                self._offset += len(piece)
        return b"".join(pieces)
