"""Signed envelopes: verifiable by anyone later, bound to author, job and sequence."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import Envelope, EnvelopeError, EnvelopeKind, RemoteProtocolError

from .support import BOB, MALLORY

JOB = bytes(range(16))
OTHER_JOB = bytes(range(1, 17))


def result(seq: int = 3, payload: bytes = b"42", job: bytes = JOB) -> Envelope:
    return Envelope.sign(BOB, EnvelopeKind.RESULT, job, seq, payload, ref=bytes(32))


def test_known_answer() -> None:
    """Ed25519 is deterministic: the digest and the signature are pinned."""
    envelope = result()
    assert envelope.digest.hex() == (
        "501f9244bb014bf35bcb7a2eaf6123139dd91206f92cf612693780f0707b0c1c"
    )
    assert envelope.signature.hex() == (
        "24f407852249002fe9a0526dbd80703e1f660e67cab124ab85a5c1c3ec2fa19c"
        "c74b5d7d57421d12526a0c6cbf02358411647f2916575090fce00a7f9f294e06"
    )
    assert envelope.to_bytes().hex() == (
        "980103c42066681631128accf1095288e8f0bb5b6adcdad3d3a4d780e1198fd5ff8cfede65"
        "c410000102030405060708090a0b0c0d0e0f03c420" + "00" * 32
        + "c440" + envelope.signature.hex() + "c4023432"
    )


def test_verify_accepts_what_was_signed() -> None:
    envelope = result()
    envelope.verify()
    envelope.verify(author=BOB.node_id, kind=EnvelopeKind.RESULT, job_id=JOB, seq=3,
                    ref=bytes(32))
    envelope.verify(author=BOB.public_key)
    assert envelope.author_id == BOB.node_id


def test_verify_later_from_bytes_alone() -> None:
    stored = result().to_bytes()
    loaded = Envelope.from_bytes(stored)
    assert loaded == result()
    loaded.verify(author=BOB.node_id, job_id=JOB, seq=3)


def test_signature_by_another_key_fails() -> None:
    forged = Envelope.sign(MALLORY, EnvelopeKind.RESULT, JOB, 3, b"42", ref=bytes(32))
    # Mallory claims Bob wrote it: swap in Bob's key, keep Mallory's signature.
    claimed = dataclasses.replace(forged, author=BOB.public_key)
    with pytest.raises(EnvelopeError, match="signature .* is not"):
        claimed.verify()
    with pytest.raises(EnvelopeError, match="author is"):
        forged.verify(author=BOB.node_id)


@pytest.mark.parametrize(
    "change",
    [
        {"job_id": OTHER_JOB},
        {"seq": 4},
        {"ref": bytes(31) + b"\x01"},
        {"kind": EnvelopeKind.FRAGMENT},
        {"payload": b"43"},
    ],
)
def test_envelope_moved_or_altered_fails(change: dict[str, object]) -> None:
    """Moving a valid result to another job or sequence number breaks its signature."""
    moved = dataclasses.replace(result(), **change)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError):
        moved.verify()


def test_a_valid_envelope_for_elsewhere_is_refused_by_expectations() -> None:
    """A genuine result of another job or fragment cannot be slipped in either."""
    genuine_other = result(seq=9, job=OTHER_JOB)
    genuine_other.verify()
    with pytest.raises(EnvelopeError, match="job_id"):
        genuine_other.verify(job_id=JOB)
    with pytest.raises(EnvelopeError, match="seq is 9, expected 3"):
        genuine_other.verify(job_id=OTHER_JOB, seq=3)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_from_bytes_garbage_is_a_remote_error(data: bytes) -> None:
    try:
        Envelope.from_bytes(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 7))
def test_every_bit_flip_in_stored_envelope_is_caught(position: int, bit: int) -> None:
    stored = bytearray(result(payload=b"p" * 50).to_bytes())
    stored[position % len(stored)] ^= 1 << bit
    try:
        Envelope.from_bytes(bytes(stored)).verify()
    except RemoteProtocolError:
        return
    raise AssertionError("a flipped bit went unnoticed")
