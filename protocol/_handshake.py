"""The handshake: three messages that authenticate two node identities to each other.

SIGMA-I in Noise-XX clothing. Both sides send fresh X25519 ephemeral keys; every later
key comes from their shared secret *and* from the swarm secret (or, with a job code, from
a SPAKE2 key), so only swarm members can finish it. Each side then sends, encrypted, its
Ed25519 public key, its signature over the transcript hash and a MAC over its key. The
transcript hash covers every byte sent so far, the offered version lists included, so no
one can change a message, swap an ephemeral key or strip a version without the
signatures failing. The states and their order are in `_state.TRANSITIONS`; this module
holds the cryptography of each step. SPEC.md gives the byte layouts and the key schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from ._crypto import (
    AEAD_TAG_BYTES,
    X25519_BYTES,
    Rng,
    aead_open,
    aead_seal,
    equal,
    kdf,
    transcript_hash,
    x25519,
    x25519_keypair,
)
from ._errors import LocalProtocolError, RemoteProtocolError
from ._identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, NodeId, NodeIdentity, verify_signature
from ._pake import PAKE_MESSAGE_BYTES, JobCode, PakeExchange

MAGIC = b"octo"
HANDSHAKE_FORMAT = 1
#: Protocol versions this implementation speaks (the message set of `_messages`).
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
MAX_VERSIONS = 16
#: No handshake message is larger; the frame decoder enforces it before reading one.
MAX_HANDSHAKE_FRAME = 512
_MAC_BYTES = 32
_SEALED_BYTES = PUBLIC_KEY_BYTES + SIGNATURE_BYTES + _MAC_BYTES + AEAD_TAG_BYTES
_RESPONDER_LABEL = b"octop2p handshake responder v1\x00"
_INITIATOR_LABEL = b"octop2p handshake initiator v1\x00"

#: Who may connect: a set of node ids, a predicate over the id, or None for any member.
Pinned: TypeAlias = Collection[NodeId] | Callable[[NodeId], bool] | None


class AuthMode(IntEnum):
    """What admitted the peer: swarm membership, or a one-time job code."""

    SWARM = 1
    JOB_CODE = 2


class Refusal(IntEnum):
    """Why a responder refused a handshake before any cryptography (sent in clear)."""

    NO_COMMON_VERSION = 1
    MODE_NOT_ACCEPTED = 2


@dataclass(frozen=True, repr=False)
class SessionKeys:
    """What the handshake hands to the channel: one key and header per direction."""

    send_key: bytes
    send_header: bytes
    recv_key: bytes
    recv_header: bytes
    session_id: bytes  #: 16 bytes naming this session, equal on both sides
    transcript: bytes  #: the final transcript hash

    def __repr__(self) -> str:
        return f"SessionKeys(session_id={self.session_id.hex()})"


@dataclass(frozen=True)
class PeerInfo:
    """The authenticated peer and what was agreed with it."""

    public_key: bytes
    node_id: NodeId
    version: int
    mode: AuthMode


def check_versions(versions: Sequence[int]) -> tuple[int, ...]:
    """Validate a list of versions this side offers (ascending, unique, 1..65535)."""
    out = tuple(versions)
    if not (1 <= len(out) <= MAX_VERSIONS and all(type(v) is int and 0 < v < 2**16 for v in out)):
        raise LocalProtocolError(f"versions must be 1 to {MAX_VERSIONS} integers in 1..65535")
    if list(out) != sorted(set(out)):
        raise LocalProtocolError("versions must be ascending and unique")
    return out


class _Reader:
    """Reads a handshake message field by field; running short is the peer's fault."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    def take(self, size: int) -> bytes:
        if self._pos + size > len(self._data):
            raise RemoteProtocolError(f"{self._what} is truncated")
        self._pos += size
        return self._data[self._pos - size : self._pos]

    @property
    def position(self) -> int:
        return self._pos

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def versions(self) -> tuple[int, ...]:
        count = self.uint(1)
        versions = tuple(self.uint(2) for _ in range(count))
        canonical = list(versions) == sorted(set(versions)) and 0 not in versions
        if not 1 <= count <= MAX_VERSIONS or not canonical:
            raise RemoteProtocolError(f"{self._what} has an invalid version list")
        return versions

    def end(self) -> None:
        if self._pos != len(self._data):
            raise RemoteProtocolError(f"{self._what} has {len(self._data) - self._pos} extra bytes")


def _encode_versions(versions: Sequence[int]) -> bytes:
    return bytes([len(versions)]) + b"".join(v.to_bytes(2, "big") for v in versions)


def _session_keys(secret: bytes, transcript: bytes, *, initiator: bool) -> SessionKeys:
    master = kdf(secret, b"channel", transcript)
    i2r = kdf(master, b"i2r key"), kdf(master, b"i2r header", size=24)
    r2i = kdf(master, b"r2i key"), kdf(master, b"r2i header", size=24)
    send, recv = (i2r, r2i) if initiator else (r2i, i2r)
    session_id = kdf(master, b"session id", size=16)
    return SessionKeys(send[0], send[1], recv[0], recv[1], session_id, transcript)


def _admit(pinned: Pinned, peer: NodeId, own: NodeIdentity) -> None:
    if peer == own.node_id:
        raise RemoteProtocolError("the peer is this node itself (it connected to itself)")
    allowed = pinned is None or (pinned(peer) if callable(pinned) else peer in pinned)
    if not allowed:
        raise RemoteProtocolError(f"peer {peer} is not among the pinned (trusted) peers")


class _Side:
    """What both sides share: the identity, the secret, the pinned set, the last transcript."""

    def __init__(self, identity: NodeIdentity, versions: Sequence[int], pinned: Pinned,
                 rng: Rng) -> None:
        self._identity, self._pinned, self._rng = identity, pinned, rng
        self._versions = check_versions(versions)
        self._ephemeral = self.ephemeral_public = b""  # made when first needed
        self._secret = b""  # handshake secret: derived from the auth secret, DH, transcript
        self._transcript = b""
        self._pake: PakeExchange | None = None

    def forget(self) -> None:
        """Drop the ephemeral private key and the handshake secret once keys are derived.

        Python cannot wipe memory, but no reference should keep them alive for the life
        of the connection (forward secrecy is only as good as this).
        """
        self._ephemeral = self._secret = b""
        self._pake = None

    def _new_ephemeral(self) -> None:
        self._ephemeral, self.ephemeral_public = x25519_keypair(self._rng)

    def _derive(self, auth: bytes, peer_ephemeral: bytes, transcript: bytes) -> None:
        dh = x25519(self._ephemeral, peer_ephemeral)
        self._secret = kdf(auth, b"handshake", dh + transcript)

    def _seal_identity(self, role: bytes, transcript: bytes, signed: bytes) -> bytes:
        """This side's encrypted identity: public key, signature of `signed`, MAC."""
        me = self._identity
        mac = kdf(kdf(self._secret, role + b" mac", transcript), b"identity", me.public_key)
        plaintext = me.public_key + me.sign(signed) + mac
        return aead_seal(kdf(self._secret, role + b" seal", transcript), plaintext, transcript)

    def _open_identity(
        self, role: bytes, transcript: bytes, sealed: bytes, mode: AuthMode, signed: bytes
    ) -> bytes:
        """Decrypt and check the peer's identity; return its public key."""
        plaintext = aead_open(kdf(self._secret, role + b" seal", transcript), sealed, transcript)
        if plaintext is None:
            secret = "swarm secret" if mode is AuthMode.SWARM else "job code"
            raise RemoteProtocolError(
                f"handshake failed: the peer holds a different {secret}, or a handshake "
                "message was altered in transit"
            )
        peer_key = plaintext[:PUBLIC_KEY_BYTES]
        signature = plaintext[PUBLIC_KEY_BYTES : PUBLIC_KEY_BYTES + SIGNATURE_BYTES]
        mac = plaintext[PUBLIC_KEY_BYTES + SIGNATURE_BYTES :]
        expected = kdf(kdf(self._secret, role + b" mac", transcript), b"identity", peer_key)
        if not equal(mac, expected):
            raise RemoteProtocolError("handshake failed: the peer's identity MAC is wrong")
        if not verify_signature(peer_key, signed, signature):
            raise RemoteProtocolError(
                "handshake failed: the peer's signature does not cover this handshake "
                "(a man in the middle, or a signature by another key)"
            )
        _admit(self._pinned, NodeId.from_public_key(peer_key), self._identity)
        return peer_key


class InitiatorHandshake(_Side):
    """The connecting side: sends message 1, answers message 2 with message 3."""

    def __init__(
        self, identity: NodeIdentity, *, swarm_secret: bytes | None, job_code: JobCode | None,
        versions: Sequence[int], pinned: Pinned, rng: Rng,
    ) -> None:
        if (swarm_secret is None) == (job_code is None):
            raise LocalProtocolError("an initiator needs exactly one of swarm_secret, job_code")
        super().__init__(identity, versions, pinned, rng)
        self._new_ephemeral()
        self._swarm_secret = swarm_secret
        if job_code is not None:
            self._pake = PakeExchange(job_code, client=True, rng=rng)
        self.mode = AuthMode.SWARM if job_code is None else AuthMode.JOB_CODE
        pake = self._pake.message if self._pake else b""
        #: Message 1, to be sent first.
        self.message1 = (
            MAGIC + bytes([HANDSHAKE_FORMAT, self.mode]) + _encode_versions(self._versions)
            + self.ephemeral_public + bytes([len(pake)]) + pake
        )
        self._transcript = transcript_hash(b"", self.message1)

    def receive_message2(self, data: bytes) -> tuple[bytes, PeerInfo, SessionKeys]:
        """Check message 2; return message 3, the peer and the channel keys."""
        reader = _Reader(data, "handshake message 2")
        chosen = reader.uint(2)
        if chosen == 0:
            self._refused(reader)
        versions = reader.versions()
        common = set(self._versions) & set(versions)
        if not common or chosen != max(common):
            raise RemoteProtocolError(
                f"version downgrade: the peer chose version {chosen}, but both sides offer "
                f"{sorted(common)}"
            )
        peer_ephemeral = reader.take(X25519_BYTES)
        pake = reader.take(reader.uint(1))
        clear = data[: reader.position]
        sealed = reader.take(_SEALED_BYTES)
        reader.end()
        if self._pake is not None:
            auth = self._pake.finish(pake)
        elif pake:
            raise RemoteProtocolError("handshake message 2 carries an unexpected SPAKE2 message")
        else:
            auth = self._swarm_secret or b""
        transcript = transcript_hash(self._transcript, clear)
        self._derive(auth, peer_ephemeral, transcript)
        peer_key = self._open_identity(
            b"responder", transcript, sealed, self.mode, _RESPONDER_LABEL + transcript
        )
        transcript = transcript_hash(transcript, sealed)
        message3 = self._seal_identity(
            b"initiator", transcript, _INITIATOR_LABEL + transcript + peer_key
        )
        keys = _session_keys(self._secret, transcript_hash(transcript, message3), initiator=True)
        peer = PeerInfo(peer_key, NodeId.from_public_key(peer_key), chosen, self.mode)
        return message3, peer, keys

    def _refused(self, reader: _Reader) -> None:
        reason = reader.uint(1)
        versions = reader.versions()
        reader.end()
        if reason == Refusal.NO_COMMON_VERSION:
            raise RemoteProtocolError(
                f"no common protocol version: this node speaks {list(self._versions)}, the "
                f"peer speaks {list(versions)}; update the older one"
            )
        if reason == Refusal.MODE_NOT_ACCEPTED:
            what = "a swarm member" if self.mode is AuthMode.SWARM else "a job code"
            raise RemoteProtocolError(f"the peer does not accept {what} on this connection")
        raise RemoteProtocolError(f"the peer refused the handshake (reason {reason})")


@dataclass(frozen=True)
class Reply:
    """The responder's answer to message 1: bytes to send, and an error if it refused."""

    data: bytes
    refusal: RemoteProtocolError | None = None


class ResponderHandshake(_Side):
    """The accepting side: answers message 1 with message 2, then checks message 3."""

    def __init__(
        self, identity: NodeIdentity, *, swarm_secret: bytes | None, job_code: JobCode | None,
        versions: Sequence[int], pinned: Pinned, rng: Rng,
    ) -> None:
        if swarm_secret is None and job_code is None:
            raise LocalProtocolError("a responder needs a swarm_secret, a job_code or both")
        super().__init__(identity, versions, pinned, rng)
        self._swarm_secret, self._job_code = swarm_secret, job_code
        #: The mode the initiator asked for, once message 1 is parsed.
        self.peer_mode: AuthMode | None = None
        self.version = 0

    def receive_message1(self, data: bytes) -> Reply:
        """Check message 1 and answer it (with message 2, or a refusal)."""
        reader = _Reader(data, "handshake message 1")
        if reader.take(len(MAGIC)) != MAGIC:
            raise RemoteProtocolError("the peer does not speak the octop2p protocol (bad magic)")
        if (fmt := reader.uint(1)) != HANDSHAKE_FORMAT:
            raise RemoteProtocolError(f"the peer uses handshake format {fmt}, not 1: update it")
        try:
            mode = AuthMode(reader.uint(1))
        except ValueError:
            raise RemoteProtocolError("handshake message 1 names an unknown mode") from None
        self.peer_mode = mode
        versions = reader.versions()
        peer_ephemeral = reader.take(X25519_BYTES)
        pake = reader.take(reader.uint(1))
        reader.end()
        if len(pake) != (PAKE_MESSAGE_BYTES if mode is AuthMode.JOB_CODE else 0):
            raise RemoteProtocolError("handshake message 1 has a SPAKE2 message of wrong size")
        common = set(versions) & set(self._versions)
        auth = self._swarm_secret if mode is AuthMode.SWARM else None
        if not common or (mode is AuthMode.SWARM and auth is None) or (
            mode is AuthMode.JOB_CODE and self._job_code is None
        ):
            return self._refuse(mode, versions, common)
        self._new_ephemeral()
        self.version = max(common)
        reply_pake = b""
        if mode is AuthMode.JOB_CODE and self._job_code is not None:
            exchange = PakeExchange(self._job_code, client=False, rng=self._rng)
            auth, reply_pake = exchange.finish(pake), exchange.message
        clear = (
            self.version.to_bytes(2, "big") + _encode_versions(self._versions)
            + self.ephemeral_public + bytes([len(reply_pake)]) + reply_pake
        )
        transcript = transcript_hash(transcript_hash(b"", data), clear)
        self._derive(auth or b"", peer_ephemeral, transcript)
        sealed = self._seal_identity(b"responder", transcript, _RESPONDER_LABEL + transcript)
        self._transcript = transcript_hash(transcript, sealed)
        return Reply(clear + sealed)

    def _refuse(self, mode: AuthMode, versions: tuple[int, ...], common: set[int]) -> Reply:
        reason = Refusal.MODE_NOT_ACCEPTED if common else Refusal.NO_COMMON_VERSION
        data = b"\x00\x00" + bytes([reason]) + _encode_versions(self._versions)
        if reason is Refusal.NO_COMMON_VERSION:
            error = RemoteProtocolError(
                f"no common protocol version: the peer speaks {list(versions)}, this node "
                f"speaks {list(self._versions)}"
            )
        else:
            error = RemoteProtocolError(f"refused a peer using {mode.name.lower()} authentication")
        return Reply(data, error)

    def receive_message3(self, data: bytes) -> tuple[PeerInfo, SessionKeys]:
        """Check message 3; return the peer and the channel keys."""
        if len(data) != _SEALED_BYTES:
            raise RemoteProtocolError(f"handshake message 3 is {len(data)} bytes, not 144")
        own, mode = self._identity.public_key, self.peer_mode or AuthMode.SWARM
        peer_key = self._open_identity(
            b"initiator", self._transcript, data, mode, _INITIATOR_LABEL + self._transcript + own
        )
        transcript = transcript_hash(self._transcript, data)
        keys = _session_keys(self._secret, transcript, initiator=False)
        peer = PeerInfo(peer_key, NodeId.from_public_key(peer_key), self.version, mode)
        return peer, keys
