"""Compression of large blobs on the wire: zlib level 1, chosen per message, bounded.

A blob that travels in its own record (larger than `INLINE_BLOB`) is deflated when the
peer announced `COMPRESSION` in its `Hello` and when deflating pays: a sample of its head
must shrink by an eighth, and so must the whole. Small messages are never compressed.
The receiver knows the inflated size from the head before it inflates anything, refuses
one over its bound, and inflates at most that many bytes: a decompression bomb ends the
connection with a `RemoteProtocolError`, having allocated no more than the announced
size. Signatures cover the inflated bytes: compression is invisible above this layer.
"""

from __future__ import annotations

import zlib

from ._errors import RemoteProtocolError

#: The `Hello.features` flag of a node that accepts compressed blobs.
COMPRESSION = "zlib"
#: zlib level 1: about 5x cheaper than the default level, most of its gain on text.
LEVEL = 1
#: Bytes deflated first to decide: an incompressible blob (a tarball, random bytes)
#: costs this much, not a pass over all of it.
SAMPLE = 64 * 1024
#: Deflated size must be at most this fraction of the original, for the sample and
#: for the whole, or the blob goes as it is.
PAYS = 7 / 8


def deflate(blob: bytes) -> bytes | None:
    """``blob`` deflated, or None when deflating would not save an eighth of it."""
    if len(blob) > SAMPLE and len(zlib.compress(blob[:SAMPLE], LEVEL)) > SAMPLE * PAYS:
        return None
    packed = zlib.compress(blob, LEVEL)
    return packed if len(packed) <= len(blob) * PAYS else None


def inflate(packed: bytes, size: int) -> bytes:
    """Inflate ``packed`` into exactly ``size`` bytes, allocating no more than that.

    ``size`` was checked against the receiver's bounds before this is called. Anything
    else (more or fewer bytes, trailing data, corrupt input) is the peer's error.
    """
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, size)
    except zlib.error as exc:
        raise RemoteProtocolError(f"a compressed blob is corrupt ({exc})") from None
    if len(data) != size or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise RemoteProtocolError(
            f"a compressed blob does not inflate to the {size} bytes its head announced"
        )
    return data
