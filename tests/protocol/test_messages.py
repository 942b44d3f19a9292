"""Messages: every one round-trips; decoding checks every field; known encodings."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    Cancel,
    Envelope,
    EnvelopeKind,
    Error,
    ErrorCode,
    Fragment,
    Heartbeat,
    Hello,
    JobInfo,
    JobKind,
    JobSubmit,
    LocalProtocolError,
    Message,
    PackageChunk,
    RemoteProtocolError,
    Result,
    Task,
    WorkRequest,
    content_hash,
)
from protocol._messages import decode_head, decode_message, encode_message, message_types
from protocol._schema import INLINE_BLOB

from .strategies import any_message
from .support import ALICE


@settings(max_examples=300, deadline=None)
@given(any_message)
def test_every_message_round_trips(message: Message) -> None:
    head, blob = encode_message(message)
    assert decode_message(head, blob) == message


def test_every_message_type_is_covered() -> None:
    numbers = [cls.TYPE for cls in message_types()]
    assert numbers == list(range(1, len(numbers) + 1))
    names = {cls.__name__ for cls in message_types()}
    assert {"Hello", "Heartbeat", "WorkRequest", "Fragment", "Result", "PackageRequest",
            "PackageChunk", "JobSubmit", "JobStatus", "JobEvent", "Cancel", "Error"} <= names


def test_known_encodings() -> None:
    """Pin the wire format: a change here breaks compatibility with deployed nodes."""
    head, blob = encode_message(Heartbeat(seq=7, donating=True, free_cores=2))
    assert (head.hex(), blob) == ("95020107c302", None)
    head, blob = encode_message(Error(ErrorCode.NOT_FOUND, "no such job", bytes(16), None))
    assert head.hex() == (
        "960e0103ab6e6f2073756368206a6f62c41000000000000000000000000000000000c0"
    )
    assert content_hash(b"tar").hex() == (
        "c5a6889f972fe391f79897e393a8b4599972cdd5262d1fc44a8fc2d7e8ff8b95"
    )
    head, blob = encode_message(PackageChunk(content_hash(b"tar"), 0, 3, b"tar"))
    assert (head.hex(), blob) == (
        "960801c420" + content_hash(b"tar").hex() + "0003c403746172", None
    )


def test_large_blob_travels_in_its_own_record() -> None:
    data = bytes(INLINE_BLOB + 1)
    head, blob = encode_message(PackageChunk(bytes(32), 0, len(data), data))
    assert blob is data  # not copied
    assert len(head) < 100
    assert decode_head(head).blob_length == len(data)
    small = encode_message(PackageChunk(bytes(32), 0, INLINE_BLOB, bytes(INLINE_BLOB)))
    assert small[1] is None


def fragment(**overrides: object) -> Fragment:
    envelope = Envelope.sign(ALICE, EnvelopeKind.FRAGMENT, bytes(16), 1, b"x", bytes(32))
    return Fragment(Task.PROCESS, envelope, **overrides)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: Heartbeat(seq=-1, donating=True, free_cores=0),
        lambda: Heartbeat(seq=1, donating=1, free_cores=0),  # bool, not int
        lambda: Heartbeat(seq=True, donating=True, free_cores=0),  # int, not bool
        lambda: WorkRequest(credits=0),
        lambda: Hello("n" * 65, "octop2p", 1, True),
        lambda: Hello("n", "octop2p", 1, True, features=["list"]),  # tuple required
        lambda: Cancel(job_id=bytes(15)),
        lambda: Cancel(job_id=bytes(16), reason="\ud800"),
        lambda: Result(envelope=fragment().envelope),  # a FRAGMENT envelope in a Result
        lambda: JobInfo(bytes(16), "j", JobKind.PACKAGE, None, bytes(32), 1, bytes(32),
                        bytes(64), options={"x": float("nan")}),
        lambda: JobSubmit(fragment().envelope, JobKind.SCRIPT, "j"),
    ],
)
def test_bad_fields_are_local_errors(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def test_error_names_the_field() -> None:
    with pytest.raises(LocalProtocolError, match=r"Heartbeat\.free_cores: 5000 is outside"):
        Heartbeat(seq=1, donating=True, free_cores=5000)


def raw_head(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (raw_head(99, 1), "unknown message type 99 version 1"),
        (raw_head(2, 2, 1, True, 0), "unknown message type 2 version 2"),
        (raw_head(2, 1, 1, True), "has 3 fields, the peer sent 2"),
        (raw_head(2, 1, 1, 1, 0), "donating: expected a boolean"),
        (raw_head(2, 1, -1, True, 0), "seq: -1 is outside"),
        (raw_head(2, 1, 1.0, True, 0), "seq: expected an integer, got float"),
        (raw_head(3, 1, 1, b"short"), "expected 16 bytes"),
        (raw_head(5, 1, "process", [2, b"a" * 32]), "expected an array of 7"),
        (raw_head(5, 1, "cook", [2] * 6 + [b"x"]), "'cook' is not a Task"),
        (raw_head(8, 1, b"a" * 32, 0, 3, 2**40), "announces a blob"),
        (raw_head(8, 1, b"a" * 32, 0, 3, 10), "announces a blob"),  # small must be inline
        (raw_head(1, 1, "n", "s", 1, True, [], [], ["m"] * 5000), "5000 items exceed"),
        (b"\xc1", "not valid msgpack"),
        (raw_head(), "not an array"),
        (msgpack.packb({"type": 1}), "not an array"),
        (b"\x92\x02\x01\x00", "not valid msgpack"),  # trailing byte
    ],
)
def test_bad_messages_are_remote_errors(data: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError, match=reason):
        decode_message(data)


def test_envelope_must_match_its_message() -> None:
    result_envelope = Envelope.sign(ALICE, EnvelopeKind.RESULT, bytes(16), 1, b"x", bytes(32))
    head, _ = encode_message(Result(result_envelope))
    raw = msgpack.unpackb(head)
    raw[0] = Fragment.TYPE  # a RESULT envelope presented as a fragment
    raw[2:] = ["process", raw[2]]
    with pytest.raises(RemoteProtocolError, match="envelope is a RESULT, expected FRAGMENT"):
        decode_message(msgpack.packb(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_to_remote_errors_only(data: bytes) -> None:
    try:
        decode_message(data)
    except RemoteProtocolError:
        pass


msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
              st.text(max_size=10), st.binary(max_size=10)),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 16), st.integers(0, 3), st.lists(msgpack_values, max_size=10))
def test_well_formed_garbage_is_a_remote_error(type_id: int, version: int, fields: list) -> None:
    try:
        decode_message(raw_head(type_id, version, *fields))
    except RemoteProtocolError:
        pass


def test_optional_field_may_be_left_out_by_an_older_peer() -> None:
    """Hello.listen_port came later: a Hello without it decodes with port 0, one with
    it keeps it, and a Hello short of a required field is still refused."""
    old = decode_message(raw_head(1, 1, "n", "octop2p", 2, True, [], [], []))
    assert isinstance(old, Hello) and old.listen_port == 0 and old.cores == 2
    new = decode_message(raw_head(1, 1, "n", "octop2p", 2, True, [], [], [], 7878))
    assert isinstance(new, Hello) and new.listen_port == 7878
    with pytest.raises(RemoteProtocolError, match="has 8 fields, the peer sent 6"):
        decode_message(raw_head(1, 1, "n", "octop2p", 2, True, [], []))
    with pytest.raises(RemoteProtocolError, match="listen_port: 70000 is outside"):
        decode_message(raw_head(1, 1, "n", "octop2p", 2, True, [], [], [], 70000))
