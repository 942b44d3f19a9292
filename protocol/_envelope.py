"""Signed envelopes: job packages, fragments and results, signed by their author.

An envelope names its author (an Ed25519 public key), the job, a sequence number, an
optional reference (the package a fragment belongs to, the fragment a result answers) and
carries an opaque payload. The author signs a BLAKE2b-256 hash of all of these, so:

- anyone holding the envelope's bytes can check it later, apart from any channel (a result
  stays attributable to the worker that made it);
- an envelope cannot be moved to another job, sequence number or reference, or given
  another author, without breaking the signature;
- the signature costs one hash pass over the payload plus a 32-byte Ed25519 signature,
  whatever the payload's size.
"""

from __future__ import annotations

import dataclasses
import hashlib
from enum import IntEnum

import msgpack

from ._crypto import HASH_BYTES, PERSON_ENVELOPE
from ._errors import EnvelopeError, LocalProtocolError, RemoteProtocolError
from ._identity import (
    PUBLIC_KEY_BYTES,
    SIGNATURE_BYTES,
    NodeId,
    NodeIdentity,
    verify_signature,
)
from ._schema import U64, Blob, Choice, Invalid, Raw, Struct, UInt, spec, struct

JOB_ID_BYTES = 16
#: The largest payload any envelope may carry; a connection usually allows less.
MAX_PAYLOAD = 2**30
_FORMAT = 1


class EnvelopeKind(IntEnum):
    """What an envelope carries."""

    PACKAGE = 1  #: a job package (tar bytes), signed by its submitter
    FRAGMENT = 2  #: one fragment of a job, signed by the job's chief
    RESULT = 3  #: the result of one fragment, signed by the worker that computed it


def signed_digest(
    kind: EnvelopeKind, author: bytes, job_id: bytes, seq: int, ref: bytes, payload: bytes
) -> bytes:
    """The BLAKE2b-256 hash that the author signs: every field, payload last."""
    h = hashlib.blake2b(digest_size=HASH_BYTES, person=PERSON_ENVELOPE)
    h.update(bytes([_FORMAT, int(kind)]))
    h.update(author)
    h.update(job_id)
    h.update(seq.to_bytes(8, "big"))
    h.update(bytes([len(ref)]))  # ref is at most 64 bytes: its length fits in one byte
    h.update(ref)
    h.update(payload)
    return h.digest()


@struct
@dataclasses.dataclass(frozen=True, repr=False)
class Envelope(Struct):
    """A payload signed by its author, bound to a job, a sequence number and a reference.

    Make one with `Envelope.sign(...)`; check one with `envelope.verify(...)`. Store or
    forward it with `to_bytes()` / `Envelope.from_bytes()`.
    """

    kind: EnvelopeKind = spec(Choice(EnvelopeKind))
    #: The author's Ed25519 public key (see `author_id` for its node id).
    author: bytes = spec(Raw(PUBLIC_KEY_BYTES))
    job_id: bytes = spec(Raw(JOB_ID_BYTES))
    seq: int = spec(UInt(U64))
    #: What this envelope refers to: for a fragment the package's content hash, for a
    #: result the digest of the fragment envelope it answers, for a package nothing.
    ref: bytes = spec(Raw(max_len=64))
    signature: bytes = spec(Raw(SIGNATURE_BYTES))
    payload: bytes = spec(Blob(MAX_PAYLOAD))

    @classmethod
    def sign(
        cls,
        identity: NodeIdentity,
        kind: EnvelopeKind,
        job_id: bytes,
        seq: int,
        payload: bytes,
        ref: bytes = b"",
    ) -> Envelope:
        """Sign `payload` as `identity`, for job `job_id`, sequence number `seq`."""
        if (type(payload) is not bytes or type(ref) is not bytes or len(ref) > 64
                or type(job_id) is not bytes or len(job_id) != JOB_ID_BYTES):
            raise LocalProtocolError("payload must be bytes, job_id 16 bytes, ref ≤64 bytes")
        if type(seq) is not int or not 0 <= seq <= U64 or len(payload) > MAX_PAYLOAD:
            raise LocalProtocolError(f"seq must be a u64 and payload at most {MAX_PAYLOAD} bytes")
        if type(kind) is not EnvelopeKind:
            kind = EnvelopeKind(kind)
        digest = signed_digest(kind, identity.public_key, job_id, seq, ref, payload)
        # Every field is checked above (a node signs every fragment it sends: the
        # dataclass's checks would cost a tenth of the signature), and the digest is kept.
        envelope = object.__new__(cls)
        envelope.__dict__.update(kind=kind, author=identity.public_key, job_id=job_id, seq=seq,
                                 ref=ref, signature=identity.sign(digest), payload=payload,
                                 _digest=digest)
        return envelope

    def __repr__(self) -> str:
        return (
            f"Envelope({self.kind.name}, job={self.job_id.hex()}, seq={self.seq}, "
            f"author={self.author_id.short}, ref={self.ref.hex()[:16] or '-'}, "
            f"payload={len(self.payload)} bytes)"
        )

    @property
    def digest(self) -> bytes:
        """The hash the author signed: names this envelope (a result's `ref` points here)."""
        # Computed once (functools.cached_property would take a lock on every read).
        fields = self.__dict__
        digest: bytes | None = fields.get("_digest")
        if digest is None:
            digest = fields["_digest"] = signed_digest(
                self.kind, self.author, self.job_id, self.seq, self.ref, self.payload)
        return digest

    @property
    def author_id(self) -> NodeId:
        """The node id of the author."""
        return NodeId.from_public_key(self.author)

    def verify(
        self,
        *,
        author: bytes | NodeId | None = None,
        kind: EnvelopeKind | None = None,
        job_id: bytes | None = None,
        seq: int | None = None,
        ref: bytes | None = None,
    ) -> None:
        """Check the signature, and that the envelope is what the caller expects.

        Every argument given must match: pass the job, sequence number and author you
        expect, so that a valid envelope from elsewhere cannot be slipped in. Raises
        `EnvelopeError` (a `RemoteProtocolError`) naming what did not match.
        """
        if kind is not None or job_id is not None or seq is not None or ref is not None:
            expected = {"kind": kind, "job_id": job_id, "seq": seq, "ref": ref}
            for name, value in expected.items():
                if value is not None and getattr(self, name) != value:
                    raise EnvelopeError(
                        f"envelope {name} is {_show(getattr(self, name))}, expected {_show(value)}"
                    )
        if isinstance(author, NodeId):
            if self.author_id != author:
                raise EnvelopeError(f"envelope author is {self.author_id}, expected {author}")
        elif author is not None and self.author != author:
            raise EnvelopeError(
                f"envelope author is {self.author_id}, expected {NodeId.from_public_key(author)}"
            )
        if not verify_signature(self.author, self.digest, self.signature):
            raise EnvelopeError(
                f"the signature of {self.kind.name.lower()} {self.seq} of job "
                f"{self.job_id.hex()} is not {self.author_id}'s: altered or forged"
            )

    def to_bytes(self) -> bytes:
        """The envelope on its own (msgpack), to store or forward; see `from_bytes`."""
        blobs: list[bytes] = []
        fields = self._encode_fields(blobs)
        fields[-1] = self.payload  # standalone, the payload sits inline
        return msgpack.packb([_FORMAT, *fields], use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Read what `to_bytes` wrote; raise `RemoteProtocolError` if it is malformed.

        This checks form only: call `verify` before trusting the envelope.
        """
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
        except Exception as e:  # msgpack raises many types for malformed input
            raise RemoteProtocolError(f"an envelope is not valid msgpack ({e})") from None
        if type(raw) is not list or len(raw) != 1 + len(cls._SCHEMA) or raw[0] != _FORMAT:
            raise RemoteProtocolError("bytes are not an envelope of format 1")
        payload = raw[-1]
        if type(payload) is not bytes:
            raise RemoteProtocolError("an envelope's payload is not bytes")
        raw[-1] = len(payload)
        try:
            return cls._decode_fields(raw, 1, payload)
        except Invalid as e:
            raise RemoteProtocolError(f"malformed envelope: {e}") from None


def _show(value: object) -> str:
    return value.hex() if isinstance(value, bytes) else str(value)
