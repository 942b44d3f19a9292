"""`Connection`: the whole protocol for one peer, as a sans-I/O object.

The node owns the socket. It hands received bytes to `receive_data`, pulls events with
`next_event`, writes what `data_to_send` and `send` return, and never touches the
handshake, the framing or the encryption itself. A sketch of a trio driver:

    conn = Connection(Role.INITIATOR, identity, swarm_secret=code.secret, pinned=trusted)
    await stream.send_all(conn.data_to_send())
    while True:
        try:
            event = conn.next_event()
        finally:
            if out := conn.data_to_send():  # handshake replies, a refusal
                await stream.send_all(out)
        if event is None:
            conn.receive_data(await stream.receive_some())  # b"" at EOF
        elif isinstance(event, HandshakeComplete):
            await stream.send_all(conn.send(Hello(...)))
        elif isinstance(event, MessageReceived):
            ...
        elif isinstance(event, ConnectionClosed):
            break

Every state change goes through `_state.TRANSITIONS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from ._channel import ABYTES, REKEY_BYTES, REKEY_RECORDS, Channel
from ._compress import COMPRESSION
from ._crypto import Rng, default_rng
from ._envelope import MAX_PAYLOAD, Envelope
from ._errors import LocalProtocolError, RemoteProtocolError
from ._framing import FrameDecoder, frame_prefix
from ._handshake import (
    MAX_HANDSHAKE_FRAME,
    SUPPORTED_VERSIONS,
    AuthMode,
    InitiatorHandshake,
    PeerInfo,
    Pinned,
    ResponderHandshake,
    SessionKeys,
)
from ._identity import NodeId, NodeIdentity
from ._messages import (
    Hello,
    Message,
    PendingHead,
    decode_head,
    encode_message,
    finish_message,
    message_blob_size,
    new_packer,
)
from ._pake import JobCode
from ._schema import INLINE_BLOB
from ._state import Input, State, next_state

#: Default bound on a message's blob (fragment, result, package): larger ones are refused.
DEFAULT_MAX_MESSAGE = 64 * 2**20
#: Bound on a message head (everything but the blob), in bytes of msgpack.
MAX_HEAD = 4 * 2**20
MAX_CLOSE_REASON = 1024
# send_parts hands a record this large over as its own part rather than copy it.
_SPLIT_PARTS = 16 * 1024
_HANDSHAKE_STATES = (State.START, State.AWAIT_MSG2, State.AWAIT_MSG3)


class Role(Enum):
    """Which end of the TCP connection this is."""

    INITIATOR = "initiator"  #: the side that connected
    RESPONDER = "responder"  #: the side that accepted


class Event:
    """Base of what `Connection.next_event` returns."""

    __slots__ = ()


@dataclass(frozen=True)
class HandshakeComplete(Event):
    """The peer proved its identity and its swarm membership (or the job code)."""

    peer_id: NodeId
    peer_public_key: bytes
    version: int  #: the protocol version both sides agreed on
    mode: AuthMode  #: how the peer was admitted: swarm membership or a job code
    session_id: bytes  #: 16 bytes, equal on both ends; useful in logs


@dataclass(frozen=True)
class MessageReceived(Event):
    """A message from the peer, checked field by field (and its envelopes verified)."""

    message: Message


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The peer is done sending. `clean` is False when it stopped without a final record."""

    reason: str
    clean: bool


class Connection:
    """One end of an octop2p connection: handshake, then an encrypted message channel.

    Give exactly one of `swarm_secret` (32 bytes, `SwarmCode.secret`) or `job_code` to an
    initiator; a responder may take both and admits peers of either kind. `pinned` limits
    who may connect (a set of `NodeId`, or a predicate). `rng` (called with a byte count)
    is the only randomness used: ephemeral keys and SPAKE2 scalars; tests pass a
    deterministic one. Blobs larger than `max_message_size` are refused.
    With `verify_envelopes` (the default) every envelope in a received message must be
    signed by the peer, or the message is a `RemoteProtocolError`.
    """

    def __init__(
        self,
        role: Role,
        identity: NodeIdentity,
        *,
        swarm_secret: bytes | None = None,
        job_code: JobCode | None = None,
        pinned: Pinned = None,
        versions: Sequence[int] = SUPPORTED_VERSIONS,
        max_message_size: int = DEFAULT_MAX_MESSAGE,
        verify_envelopes: bool = True,
        rekey_records: int = REKEY_RECORDS,
        rekey_bytes: int = REKEY_BYTES,
        rng: Rng = default_rng,
    ) -> None:
        if swarm_secret is not None and (
            type(swarm_secret) is not bytes or len(swarm_secret) != 32
        ):
            raise LocalProtocolError("swarm_secret must be 32 bytes (SwarmCode.secret)")
        if not INLINE_BLOB <= max_message_size <= MAX_PAYLOAD:
            raise LocalProtocolError(
                f"max_message_size must be within {INLINE_BLOB}..{MAX_PAYLOAD}"
            )
        self.role = role
        self.identity = identity
        self._max_message = max_message_size
        self._verify_envelopes = verify_envelopes
        self._rekey = (rekey_records, rekey_bytes)
        self._state = State.START
        self._decoder = FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._decoder.set_limit(MAX_HANDSHAKE_FRAME, what="a handshake message")
        self._outgoing: list[bytes] = []
        self._packer = new_packer()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._peer_done: ConnectionClosed | None = None
        self._pending: PendingHead | None = None
        self._channel: Channel | None = None
        #: Deflate large blobs to this peer: its `Hello` offered `COMPRESSION`.
        self.compress_to_peer = False
        #: This side's own choice, over `compress_to_peer`: False where bytes cost less
        #: to carry than to deflate (a node sets it on a link within one host).
        self.compress_allowed = True
        self.peer: PeerInfo | None = None
        self.session_id: bytes | None = None
        side = InitiatorHandshake if role is Role.INITIATOR else ResponderHandshake
        self._handshake: InitiatorHandshake | ResponderHandshake = side(
            identity, swarm_secret=swarm_secret, job_code=job_code, versions=versions,
            pinned=pinned, rng=rng,
        )
        if isinstance(self._handshake, InitiatorHandshake):
            self._queue(self._handshake.message1)
            self._move(Input.SEND_MSG1)

    # -- what the node reads ---------------------------------------------------------------

    @property
    def may_use_job_code(self) -> bool:
        """Whether this handshake may run SPAKE2 (CPU-heavy in pure Python): an
        initiator with a job code, or a responder that accepts one."""
        hs = self._handshake
        if isinstance(hs, InitiatorHandshake):
            return hs.mode is AuthMode.JOB_CODE
        return hs._job_code is not None

    @property
    def state(self) -> State:
        """The current state (see `_state.TRANSITIONS`)."""
        return self._state

    @property
    def auth_mode(self) -> AuthMode | None:
        """How the peer asked to be admitted, once its first message is in (else None).

        A server counts failed handshakes in `AuthMode.JOB_CODE` to retire its code after
        `MAX_FAILED_ATTEMPTS`.
        """
        if self.peer is not None:
            return self.peer.mode
        handshake = self._handshake
        if isinstance(handshake, InitiatorHandshake):
            return handshake.mode
        return handshake.peer_mode

    @property
    def peer_id(self) -> NodeId | None:
        """The peer's node id, once the handshake has proved it."""
        return self.peer.node_id if self.peer else None

    def __repr__(self) -> str:
        peer = self.peer.node_id.short if self.peer else "?"
        return f"<Connection {self.role.value} peer={peer} state={self._state.name}>"

    # -- bytes in, events out --------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Hand over bytes received from the peer; `b""` means the peer closed (EOF)."""
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("receive_data called with data after EOF")
        else:
            # The decoder keeps references to chunks: it must own immutable bytes.
            self._decoder.feed(data if type(data) is bytes else bytes(data))

    def next_event(self) -> Event | None:
        """The next event, or None when more data is needed (`receive_data`).

        Raises `RemoteProtocolError` if the peer broke the protocol; the connection is then
        FAILED and raises the same error again. Before closing the socket, send what
        `data_to_send()` returns (a refusal that tells the peer why).
        """
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except RemoteProtocolError as error:
            self._error = error
            self._move(Input.PROTOCOL_ERROR)
            raise

    def _next_event(self) -> Event | None:
        if self._peer_done is not None:
            if self._decoder.buffered:
                raise RemoteProtocolError("the peer sent data after closing its stream")
            return self._peer_done
        if self._state is State.CLOSED:
            return ConnectionClosed("closed by this side", clean=True)
        while True:
            frame = self._decoder.next_frame()
            if frame is None:
                return self._at_eof() if self._eof else None
            if self._channel is not None:
                event = self._on_record(frame)
            else:
                event = self._on_handshake(frame)
            if event is not None:
                return event

    def _on_handshake(self, frame: bytes) -> Event | None:
        handshake = self._handshake
        if self._state is State.START and isinstance(handshake, ResponderHandshake):
            reply = handshake.receive_message1(frame)
            self._queue(reply.data)
            if reply.refusal is not None:
                raise reply.refusal
            self._move(Input.RECV_MSG1)
            return None
        if self._state is State.AWAIT_MSG2 and isinstance(handshake, InitiatorHandshake):
            message3, peer, keys = handshake.receive_message2(frame)
            self._queue(message3)
            return self._open(peer, keys, Input.RECV_MSG2)
        if self._state is State.AWAIT_MSG3 and isinstance(handshake, ResponderHandshake):
            peer, keys = handshake.receive_message3(frame)
            return self._open(peer, keys, Input.RECV_MSG3)
        raise RemoteProtocolError(f"unexpected data in state {self._state.name}")

    def _on_record(self, frame: bytes) -> Event | None:
        assert self._channel is not None
        plaintext, final = self._channel.open(frame)
        if final:
            if self._pending is not None:
                raise RemoteProtocolError("the peer closed in the middle of a message")
            self._move(Input.RECV_FINAL, remote=True)
            reason = plaintext[:MAX_CLOSE_REASON].decode("utf-8", "replace")
            self._peer_done = ConnectionClosed(reason, clean=True)
            return self._peer_done
        pending = self._pending
        if pending is None:
            pending = decode_head(plaintext, self._max_message)
            if pending.blob_length is not None:
                self._pending = pending  # the blob is the next record, of a known size
                self._decoder.set_limit(
                    pending.blob_length + ABYTES, exact=pending.blob_length + ABYTES,
                    what=f"the blob of a {pending.cls.__name__}",
                )
                return None
            message = finish_message(pending)
        else:
            self._pending = None
            self._decoder.set_limit(MAX_HEAD + ABYTES, what="a message record")
            message = finish_message(pending, plaintext)
        if self._verify_envelopes and message._ENVELOPES:
            self._check_envelopes(message)
        if type(message) is Hello:
            self.compress_to_peer = COMPRESSION in message.features
        self._move(Input.RECV_MESSAGE, remote=True)
        return MessageReceived(message)

    def _open(self, peer: PeerInfo, keys: SessionKeys, event: Input) -> Event:
        records, size = self._rekey
        self._channel = Channel(keys, rekey_records=records, rekey_bytes=size)
        self._handshake.forget()
        self.peer, self.session_id = peer, keys.session_id
        self._decoder.set_limit(MAX_HEAD + ABYTES, what="a message record")
        self._move(event)
        return HandshakeComplete(
            peer.node_id, peer.public_key, peer.version, peer.mode, keys.session_id
        )

    def _check_envelopes(self, message: Message) -> None:
        # In every message of version 1 the envelope's author is the sender itself: the
        # chief signs fragments, workers sign results, submitters sign packages.
        author = self.peer.public_key if self.peer else b""
        for name in message._ENVELOPES:
            envelope: Envelope = getattr(message, name)
            envelope.verify(author=author)

    def _at_eof(self) -> Event:
        if self._decoder.buffered or self._pending is not None:
            raise RemoteProtocolError("the connection was cut in the middle of a record")
        if self._state in _HANDSHAKE_STATES:
            raise RemoteProtocolError(
                "the peer closed the connection during the handshake (it may not be in this "
                "swarm, or may not trust this node)"
            )
        self._move(Input.RECV_EOF, remote=True)
        self._peer_done = ConnectionClosed("the peer closed without a final record", clean=False)
        return self._peer_done

    # -- events in, bytes out --------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Bytes the protocol itself produced (handshake messages): send them, in order."""
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        return data

    def send(self, message: Message) -> bytes:
        """Encrypt `message`; return the bytes to send (after any `data_to_send()`)."""
        return b"".join(self.send_parts(message))

    def send_parts(self, message: Message) -> list[bytes]:
        """Like `send`, but a blob stays its own buffer: no copy of a large payload.

        Write the parts in order (for instance one `send_all` each).
        """
        if not isinstance(message, Message):
            raise LocalProtocolError(f"send() takes a Message, not {type(message).__name__}")
        target = next_state(self._state, Input.SEND_MESSAGE)
        if self._channel is None or target is None:
            raise LocalProtocolError(f"cannot send a message in state {self._state.name}")
        raw_size = message_blob_size(message)
        if raw_size > self._max_message:
            raise LocalProtocolError(
                f"{type(message).__name__} payload of {raw_size} bytes exceeds "
                f"max_message_size={self._max_message}"
            )
        compress = self.compress_to_peer and self.compress_allowed
        head, blob = encode_message(message, self._packer, compress=compress)
        if len(head) > MAX_HEAD:
            raise LocalProtocolError(
                f"{type(message).__name__} head of {len(head)} bytes exceeds {MAX_HEAD}"
            )
        self._state = target  # looked up in the table above, before anything could fail
        record = self._channel.seal(head)
        if blob is not None:
            sealed = self._channel.seal(blob)
            return [frame_prefix(len(record)) + record + frame_prefix(len(sealed)), sealed]
        if len(record) >= _SPLIT_PARTS:
            return [frame_prefix(len(record)), record]
        return [frame_prefix(len(record)) + record]

    def close(self, reason: str = "") -> bytes:
        """Close this direction with an authenticated final record; return its bytes.

        During the handshake there is nothing to send and the connection just ends. Calling
        it again, or after a failure, returns b"".
        """
        if self._state in (State.LOCAL_CLOSED, State.CLOSED, State.FAILED):
            return b""
        if self._channel is None or self._state in _HANDSHAKE_STATES:
            self._move(Input.CLOSE)
            return b""
        data = reason.encode("utf-8")[:MAX_CLOSE_REASON]
        record = self._channel.seal(data, final=True)
        self._move(Input.CLOSE)
        return frame_prefix(len(record)) + record

    # -- internals -------------------------------------------------------------------------

    def _queue(self, frame_body: bytes) -> None:
        self._outgoing.append(frame_prefix(len(frame_body)) + frame_body)

    def _move(self, event: Input, *, remote: bool = False) -> None:
        target = next_state(self._state, event)
        if target is None:
            error = RemoteProtocolError if remote else LocalProtocolError
            raise error(f"cannot {event.value} in state {self._state.name}")
        self._state = target

