"""Content by hash from a peer, in chunks: job packages (as a donor) and result
tarballs (as a submitter), and the checks a donor makes on a package before it runs it.
"""

from __future__ import annotations

import os
import secrets
import shutil
from functools import partial
from pathlib import Path

import trio

from octop2p.engine._package import PACKAGE_BYTES
from octop2p.engine._unpack import MAX_ENTRIES, UnpackError, unpack_tar
from octop2p.net._peer import PeerLink
from octop2p.net._store import content_hasher
from protocol import (
    MAX_CHUNK,
    EnvelopeKind,
    ErrorCode,
    JobInfo,
    PackageChunk,
    PackageRequest,
    RemoteProtocolError,
    content_hash,
)

FETCH_SECONDS = 60.0


class WorkRefused(Exception):
    """This node will not work on a job (not donating, missing module, bad package)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class Downloads:
    """Downloads under way from peers, fed by the chunks they send."""

    def __init__(self) -> None:
        self._chunks: dict[tuple[str, bytes], trio.MemorySendChannel[PackageChunk]] = {}

    def on_chunk(self, link: PeerLink, chunk: PackageChunk) -> None:
        waiter = self._chunks.get((link.peer_id, chunk.package))
        if waiter is not None:
            try:
                waiter.send_nowait(chunk)
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass

    async def download(
        self, link: PeerLink, digest: bytes, size: int, dest: Path, *, cap: int
    ) -> None:
        """Fetch content by hash from a peer, in chunks, into the new file ``dest``.

        A declared ``size`` above ``cap`` is refused before the first request; every
        chunk is hashed and written as it comes, so memory stays one chunk whatever the
        peer claims, and the hash is checked before the caller unpacks anything.
        ``dest`` is removed if anything fails.
        """
        if size > cap:
            raise WorkRefused(ErrorCode.REFUSED, f"the peer offers {size} bytes, more than the "
                              f"{cap} this node accepts for it")
        key = (link.peer_id, digest)
        send, receive = trio.open_memory_channel[PackageChunk](4)
        self._chunks[key] = send
        hasher = content_hasher()
        got = 0
        try:
            async with await trio.open_file(dest, "xb") as out:
                with trio.fail_after(FETCH_SECONDS):
                    while got < size:
                        await link.send(PackageRequest(package=digest, offset=got,
                                                       length=min(MAX_CHUNK, size - got)))
                        chunk = await receive.receive()
                        if (chunk.offset != got or chunk.total != size or not chunk.data
                                or len(chunk.data) > size - got):
                            raise WorkRefused(ErrorCode.BAD_MESSAGE,
                                              "the peer sent a wrong chunk")
                        hasher.update(chunk.data)
                        await out.write(chunk.data)
                        got += len(chunk.data)
            if hasher.digest() != digest:
                raise WorkRefused(ErrorCode.BAD_MESSAGE, "the content does not match its hash")
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(partial(dest.unlink, missing_ok=True))
            if isinstance(exc, trio.TooSlowError):
                raise WorkRefused(ErrorCode.BUSY, "the download timed out") from None
            raise
        finally:
            self._chunks.pop(key, None)


#: The most a package download may be: the package size limit plus its tar headers.
PACKAGE_DOWNLOAD_BYTES = PACKAGE_BYTES + (MAX_ENTRIES + 2) * 1536


def verify_package(tar: Path, info: JobInfo) -> None:
    """The package file is the one named, signed by the job's submitter for this job."""
    data = tar.read_bytes()
    if content_hash(data) != info.package:
        raise WorkRefused(ErrorCode.BAD_MESSAGE, "the package does not match its hash")
    try:
        info.package_envelope(data).verify(author=info.submitter, kind=EnvelopeKind.PACKAGE,
                                           job_id=info.job_id)
    except RemoteProtocolError as exc:
        raise WorkRefused(ErrorCode.BAD_MESSAGE, f"the package is not its submitter's: {exc}") \
            from None


def install_package(part: Path, target: Path) -> None:
    """Unpack a checked package into the cache (folder ``target``, tar beside it)."""
    unpacked = target.with_name(f".unpack-{secrets.token_hex(4)}")
    try:
        unpack_tar(part, unpacked, max_bytes=PACKAGE_BYTES)
    except UnpackError as exc:
        raise WorkRefused(ErrorCode.REFUSED, f"the package was refused: {exc}") from None
    shutil.rmtree(target, ignore_errors=True)  # left by an older node, without its tar
    os.replace(unpacked, target)
    os.replace(part, target.with_name(f"{target.name}.tar"))
