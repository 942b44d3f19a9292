"""One authenticated, encrypted link to one peer, driven by trio.

A :class:`PeerLink` owns a TCP stream and a sans-I/O ``protocol.Connection``: one reader
task pumps bytes into the protocol and messages out to the node, a lock serialises
writes, and a heartbeat task keeps liveness (mDNS cannot tell a crashed peer). A
malformed frame or a failed decryption ends this one link, never the node. A link
within one host sends large blobs as they are (`same_host`): deflating them there
costs more than the bytes it saves (docs/performance.md, "Compression on the wire").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from octop2p.engine._groups import collapse_groups
from protocol import (
    Connection,
    ConnectionClosed,
    HandshakeComplete,
    Heartbeat,
    Hello,
    LocalProtocolError,
    Message,
    MessageReceived,
    ProtocolError,
    RemoteProtocolError,
)

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0
HEARTBEAT_SECONDS = 3.0
#: A peer silent for this long is gone: its leases end and its fragments move on.
SILENCE_SECONDS = 12.0
_READ_SIZE = 1 << 20
#: A peer that takes none of this many bytes in SILENCE_SECONDS is gone: a send gives
#: up then, or a peer that stops reading would hold the link's send lock for good.
_SEND_PIECE = 1 << 20
#: Parts smaller than this are written together: on loopback and LANs one system call
#: costs more than copying a few kilobytes, and a no-op fragment is ~200 bytes.
_JOIN_BELOW = 64 << 10


def same_host(stream: trio.abc.Stream) -> bool:
    """Whether ``stream`` is a TCP connection within this host: to a loopback address,
    or to the address it comes from (a host dialling its own LAN address). Anything
    else (another host, a stream that is not a socket) counts as a network."""
    sock = getattr(stream, "socket", None)
    try:
        peer, local = sock.getpeername()[0], sock.getsockname()[0]  # type: ignore[union-attr]
    except (AttributeError, OSError, IndexError, TypeError):
        return False
    return loopback(peer) or peer == local


def loopback(host: str) -> bool:
    """``host`` is a loopback address (127.0.0.0/8, ::1, either IPv4-mapped) or
    ``localhost``."""
    import ipaddress  # here: `octop2p run` and the control commands never need it

    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host == "localhost"
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


class LinkClosed(Exception):
    """The link to a peer is closed (or never completed its handshake)."""


Handler = Callable[["PeerLink", Message], Awaitable[None]]


class PeerLink:
    """An open link to one peer that proved it belongs to our swarm (or holds the job code)."""

    def __init__(self, stream: trio.abc.Stream, conn: Connection, address: str) -> None:
        self.stream = stream
        self.conn = conn
        conn.compress_allowed = not same_host(stream)
        self.address = address
        self.hello: Hello | None = None
        self.handshake: HandshakeComplete | None = None
        self.last_heard = time.monotonic()
        self.last_sent = self.last_heard  # our last write of messages: the peer heard us
        self.donating = False
        self.free_cores = 0
        self._send_lock = trio.Lock()
        self._closed = False
        self._heartbeat_seq = 0
        self._peer_id = ""
        self.closed_event = trio.Event()

    # --- identity ------------------------------------------------------------------------

    @property
    def peer_id(self) -> str:
        """The peer's node id (text), proved by the handshake."""
        if not self._peer_id:  # asked for on every message: encode it once
            assert self.handshake is not None
            self._peer_id = str(self.handshake.peer_id)
        return self._peer_id

    @property
    def short(self) -> str:
        """A short form of the peer's id, for logs."""
        return self.handshake.peer_id.short if self.handshake else "?"

    @property
    def public_key(self) -> bytes:
        assert self.handshake is not None
        return self.handshake.peer_public_key

    @property
    def cores(self) -> int:
        return self.hello.cores if self.hello else 0

    # --- setting up ----------------------------------------------------------------------

    async def open(
        self,
        *,
        gate: Callable[[PeerLink], None] | None = None,
        limiter: trio.CapacityLimiter | None = None,
    ) -> HandshakeComplete:
        """Run the handshake; raises LinkClosed if the peer is not one of ours.

        ``gate(link)`` runs before each handshake reply goes out and may refuse it by
        raising LinkClosed (the node counts job-code guesses there). The protocol's own
        steps run in a thread where a job code may be used (at most ``limiter``'s many at
        once): they hold SPAKE2 in pure Python, which must not stall the event loop.
        """
        try:
            with trio.fail_after(HANDSHAKE_SECONDS):
                await self._flush()
                while True:
                    event = await self._handshake_event(gate, limiter)
                    if isinstance(event, HandshakeComplete):
                        self.handshake = event
                        self.last_heard = time.monotonic()
                        return event
                    if isinstance(event, ConnectionClosed):
                        raise LinkClosed(f"closed during the handshake: {event.reason}")
        except LinkClosed:
            await self.aclose("refused")
            raise
        except trio.TooSlowError:
            await self.aclose("handshake timed out")
            raise LinkClosed(
                f"no handshake from {self.address} in {HANDSHAKE_SECONDS:g} s"
            ) from None
        except (ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            await self._flush_quietly()
            await self.aclose(str(exc))
            raise LinkClosed(f"handshake with {self.address} failed: {exc}") from None

    async def _handshake_event(
        self, gate: Callable[[PeerLink], None] | None, limiter: trio.CapacityLimiter | None
    ) -> Any:
        received = False
        while True:
            try:
                if received and self.conn.may_use_job_code:
                    event = await trio.to_thread.run_sync(self.conn.next_event, limiter=limiter)
                else:
                    event = self.conn.next_event()
            except ProtocolError:
                await self._flush()  # the refusal, which tells the peer why
                raise
            if gate is not None:
                gate(self)
            await self._flush()
            if event is not None:
                return event
            data = await self.stream.receive_some(_READ_SIZE)
            self.conn.receive_data(bytes(data) if type(data) is not bytes else data)
            received = True

    async def _next_event(self) -> Any:
        while True:
            try:
                event = self.conn.next_event()
            finally:
                await self._flush()
            if event is not None:
                return event
            data = await self.stream.receive_some(_READ_SIZE)
            self.conn.receive_data(bytes(data) if type(data) is not bytes else data)

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            async with self._send_lock:
                with trio.CancelScope(shield=True):  # see send_many
                    await self._send_all(data)

    async def _send_all(self, data: bytes) -> None:
        """Write ``data``; a peer that stops taking bytes breaks the link (raises
        trio.BrokenResourceError) instead of stalling every sender behind the lock."""
        view = memoryview(data)
        for start in range(0, len(view), _SEND_PIECE):
            with trio.move_on_after(SILENCE_SECONDS) as scope:
                await self.stream.send_all(view[start : start + _SEND_PIECE])
            if scope.cancelled_caught:
                self._closed = True
                self.closed_event.set()
                with trio.CancelScope(shield=True):
                    await self.stream.aclose()  # a cut write leaves the stream unusable
                raise trio.BrokenResourceError(f"the peer took no data for {SILENCE_SECONDS:g} s")

    async def _flush_quietly(self) -> None:
        try:
            with trio.move_on_after(1):
                await self._flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ProtocolError):
            pass

    # --- running -------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Send one message; raises LinkClosed if the link is gone."""
        await self.send_many((message,))

    async def send_many(self, messages: Sequence[Message]) -> None:
        """Send messages in order, small ones in one write; raises LinkClosed if the link
        is gone. Large payloads keep their own buffer (never copied).

        Once the first message is sealed the cipher has moved on: the write must finish,
        or every later record fails to decrypt on the other side. So it is shielded from
        the caller's cancellation (a job that fails or is cancelled mid-send); a peer that
        takes no bytes for SILENCE_SECONDS still breaks the link.
        """
        if self._closed:
            raise LinkClosed(f"link to {self.short} is closed")
        try:
            async with self._send_lock:
                with trio.CancelScope(shield=True):
                    await self._write_sealed(messages)
            self.last_sent = time.monotonic()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._closed = True
            raise LinkClosed(f"link to {self.short} broke: {exc}") from None
        except LocalProtocolError as exc:
            # The connection was closed under us (the peer's close, a failed record).
            self._closed = True
            raise LinkClosed(f"link to {self.short} is closed: {exc}") from None

    async def _write_sealed(self, messages: Sequence[Message]) -> None:
        pending: list[bytes] = []
        size = 0
        for message in messages:
            for part in self.conn.send_parts(message):
                if size and size + len(part) > _JOIN_BELOW:
                    await self._send_all(b"".join(pending))
                    pending, size = [], 0
                if len(part) > _JOIN_BELOW:
                    await self._send_all(part)
                else:
                    pending.append(part)
                    size += len(part)
        if pending:
            await self._send_all(b"".join(pending))

    async def run(self, handler: Handler, hello: Hello) -> None:
        """Serve the link until it closes: say hello, read messages, send heartbeats."""
        try:
            await self.send(hello)
            # collapse_groups: a reset inside the nursery comes out as an exception group,
            # which the handlers below must still catch (or one peer's RST stops the node).
            with collapse_groups():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._heartbeats, nursery.cancel_scope)
                    await self._read_loop(handler)
                    nursery.cancel_scope.cancel()
        except (LinkClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.info("link to %s (%s) closed: %s", self.short, self.address, exc)
        except RemoteProtocolError as exc:
            # The peer broke the protocol: tell it why, then drop only this link.
            log.warning("peer %s (%s) sent a malformed frame: %s", self.short, self.address, exc)
            await self._flush_quietly()
        except Exception:  # noqa: BLE001 - one peer's message must never stop the node
            log.exception(
                "closing the link to %s (%s) after an error handling its message",
                self.short,
                self.address,
            )
        finally:
            await self.aclose("done")

    async def _read_loop(self, handler: Handler) -> None:
        while True:
            event = await self._next_event()
            self.last_heard = time.monotonic()
            if isinstance(event, MessageReceived):
                message = event.message
                if isinstance(message, Hello):
                    self.hello = message
                    self.donating = message.donating
                    self.free_cores = message.cores if message.donating else 0
                elif isinstance(message, Heartbeat):
                    self.donating = message.donating
                    self.free_cores = message.free_cores
                await handler(self, message)
            elif isinstance(event, ConnectionClosed):
                return

    async def _heartbeats(self, scope: trio.CancelScope) -> None:
        """Every HEARTBEAT_SECONDS, check the peer's silence; say we are here when we
        have sent nothing for that long (a busy link's own messages say it: a chief with
        many donors at work sends and reads no heartbeat on their links)."""
        while True:
            slept = time.monotonic()
            delay = min(HEARTBEAT_SECONDS, max(0.0, self.last_sent + HEARTBEAT_SECONDS - slept))
            await trio.sleep(delay)
            now = time.monotonic()
            # Woken far too late, this process was frozen (SIGSTOP, a suspended laptop):
            # what the peer sent meanwhile waits unread, so its silence is ours. Read first.
            frozen = now - slept > delay + HEARTBEAT_SECONDS
            if not frozen and now - self.last_heard > SILENCE_SECONDS:
                log.warning(
                    "peer %s (%s) silent for %.0f s: dropping it",
                    self.short,
                    self.address,
                    SILENCE_SECONDS,
                )
                scope.cancel()
                return
            if now - self.last_sent < HEARTBEAT_SECONDS:
                continue
            self._heartbeat_seq += 1
            await self.send(
                Heartbeat(
                    seq=self._heartbeat_seq,
                    donating=self.local_donating(),
                    free_cores=self.local_free_cores(),
                )
            )

    # The node replaces these so that heartbeats carry its current donation state.
    def local_donating(self) -> bool:
        return False

    def local_free_cores(self) -> int:
        return 0

    async def aclose(self, reason: str = "") -> None:
        """Close the link (idempotent), telling the peer why in the protocol's
        authenticated final record when the channel is up and the stream still writable."""
        was_open = not self._closed
        self._closed = True
        self.closed_event.set()
        with trio.CancelScope(shield=True):
            if was_open:
                await self._say_goodbye(reason)
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    async def _say_goodbye(self, reason: str) -> None:
        try:
            final = self.conn.close(reason)
        except ProtocolError:
            return
        if not final or self._send_lock.locked():
            return  # a write is under way (or stalled): the final record cannot follow it
        with trio.move_on_after(1):
            try:
                async with self._send_lock:
                    await self.stream.send_all(final)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
