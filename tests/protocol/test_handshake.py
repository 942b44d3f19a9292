"""The handshake: mutual authentication bound to the swarm secret, and its attacks."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    AuthMode,
    Connection,
    HandshakeComplete,
    JobCode,
    RemoteProtocolError,
    Role,
    State,
)
from protocol._crypto import aead_open, aead_seal, kdf, transcript_hash, x25519, x25519_keypair
from protocol._handshake import InitiatorHandshake, ResponderHandshake

from .support import ALICE, BOB, MALLORY, OTHER_SECRET, SECRET, fixed_rng, handshake

CODE = JobCode("12345678901")


def connect(
    initiator: dict[str, object] | None = None, responder: dict[str, object] | None = None
) -> tuple[Connection, Connection]:
    a = Connection(Role.INITIATOR, ALICE, rng=fixed_rng(b"a"),
                   **{"swarm_secret": SECRET, **(initiator or {})})  # type: ignore[arg-type]
    b = Connection(Role.RESPONDER, BOB, rng=fixed_rng(b"b"),
                   **{"swarm_secret": SECRET, **(responder or {})})  # type: ignore[arg-type]
    return a, b


def test_known_answer_transcript_and_key_schedule() -> None:
    """Fixed identities, secret and randomness give fixed bytes and keys."""
    a = InitiatorHandshake(ALICE, swarm_secret=SECRET, job_code=None, versions=(1,),
                           pinned=None, rng=fixed_rng(b"a"))
    b = ResponderHandshake(BOB, swarm_secret=SECRET, job_code=None, versions=(1,),
                           pinned=None, rng=fixed_rng(b"b"))
    message2 = b.receive_message1(a.message1).data
    message3, bob, keys_a = a.receive_message2(message2)
    alice, keys_b = b.receive_message3(message3)
    assert a.message1.hex() == (
        "6f63746f010101000140e309b302ba9bfe6e39670f3ce93d900e457d213e2553b322b700933db2437100"
    )
    assert hashlib.sha256(message2).hexdigest() == (
        "7114cf737a790e6a791ad9951a60f6d41b67d87bbc22372bbbddc8917336a770"
    )
    assert hashlib.sha256(message3).hexdigest() == (
        "ea58606960c67c758f8a59ce7b1c5bfebceac67b32d03bc3154ffeaab3339df7"
    )
    assert keys_a.send_key.hex() == (
        "dc86d6f84fb7daa10617d0f925b0c8f04da6811f231f0599f25db4a33fe4cc4f"
    )
    assert keys_a.send_header.hex() == "aa1f3cd33255a82c3d772270c66d8152acf2d522fe9cf68f"
    assert keys_a.recv_key.hex() == (
        "43e19c662d3efea2a3b209949a9c0eb2cf5861637a1ed4238c8176d54a9cbd4c"
    )
    assert keys_a.recv_header.hex() == "35369017e212605255340a3707c7099297ff50890a6d7667"
    assert keys_a.session_id.hex() == "423288e8863f5776ce7e439c4dd7de6d"
    assert (keys_b.send_key, keys_b.recv_key) == (keys_a.recv_key, keys_a.send_key)
    assert (keys_b.send_header, keys_b.recv_header) == (keys_a.recv_header, keys_a.send_header)
    assert keys_b.session_id == keys_a.session_id
    assert (bob.node_id, alice.node_id) == (BOB.node_id, ALICE.node_id)


def test_both_sides_learn_who_the_other_is() -> None:
    a, b = connect()
    done_a, done_b = handshake(a, b)
    assert isinstance(done_a, HandshakeComplete) and isinstance(done_b, HandshakeComplete)
    assert done_a.peer_id == BOB.node_id and done_a.peer_public_key == BOB.public_key
    assert done_b.peer_id == ALICE.node_id and done_b.peer_public_key == ALICE.public_key
    assert done_a.version == done_b.version == 1
    assert done_a.mode is done_b.mode is AuthMode.SWARM
    assert done_a.session_id == done_b.session_id and len(done_a.session_id) == 16
    assert a.state is b.state is State.OPEN


def test_handshake_messages_are_small() -> None:
    a, b = connect()
    first = a.data_to_send()
    b.receive_data(first)
    b.next_event()
    second = b.data_to_send()
    a.receive_data(second)
    a.next_event()
    assert (len(first), len(second), len(a.data_to_send())) == (46, 186, 148)


def test_wrong_swarm_secret_fails_and_reveals_nothing() -> None:
    a, b = connect(initiator={"swarm_secret": OTHER_SECRET})
    b.receive_data(a.data_to_send())
    assert b.next_event() is None
    a.receive_data(b.data_to_send())
    with pytest.raises(RemoteProtocolError, match="different swarm secret"):
        a.next_event()
    assert a.state is State.FAILED
    assert a.data_to_send() == b""  # Alice sends nothing that depends on her secret
    b.receive_data(b"")  # Alice hangs up
    with pytest.raises(RemoteProtocolError, match="closed the connection during the handshake"):
        b.next_event()


def test_unpinned_responder_is_refused() -> None:
    a, b = connect(initiator={"pinned": {MALLORY.node_id}})
    with pytest.raises(RemoteProtocolError, match=f"peer {BOB.node_id} is not among the pinned"):
        handshake(a, b)


def test_unpinned_initiator_is_refused() -> None:
    a, b = connect(responder={"pinned": lambda peer: peer == MALLORY.node_id})
    b.receive_data(a.data_to_send())
    b.next_event()
    a.receive_data(b.data_to_send())
    assert isinstance(a.next_event(), HandshakeComplete)
    b.receive_data(a.data_to_send())
    with pytest.raises(RemoteProtocolError, match=f"peer {ALICE.node_id} is not among"):
        b.next_event()


def test_pinned_peers_are_admitted() -> None:
    a, b = connect(initiator={"pinned": {BOB.node_id}}, responder={"pinned": [ALICE.node_id]})
    assert all(isinstance(e, HandshakeComplete) for e in handshake(a, b))


def test_a_node_connecting_to_itself_is_told_so() -> None:
    a = Connection(Role.INITIATOR, ALICE, swarm_secret=SECRET, rng=fixed_rng(b"1"))
    b = Connection(Role.RESPONDER, ALICE, swarm_secret=SECRET, rng=fixed_rng(b"2"))
    with pytest.raises(RemoteProtocolError, match="this node itself"):
        handshake(a, b)


def test_man_in_the_middle_without_the_secret_fails() -> None:
    """An outsider swaps both ephemeral keys for its own: it cannot complete either side."""
    a, b = connect()
    mallory_private, mallory_public = x25519_keypair(fixed_rng(b"m"))
    message1 = a.data_to_send()
    b.receive_data(message1[:13] + mallory_public + message1[45:])
    b.next_event()
    message2 = b.data_to_send()
    a.receive_data(message2[:9] + mallory_public + message2[41:])
    with pytest.raises(RemoteProtocolError, match="different swarm secret, or a handshake"):
        a.next_event()


def test_man_in_the_middle_with_the_secret_fails_on_the_signature() -> None:
    """Even a swarm member swapping ephemeral keys cannot relay Bob's signed identity.

    Mallory knows the swarm secret. She runs the key exchange with Alice and with Bob
    separately, decrypts Bob's identity and signature and re-encrypts them for Alice. The
    signature covers Bob's transcript, which holds Mallory's ephemeral key rather than
    Alice's, so Alice rejects it.
    """
    alice = InitiatorHandshake(ALICE, swarm_secret=SECRET, job_code=None, versions=(1,),
                               pinned={BOB.node_id}, rng=fixed_rng(b"a"))
    bob = ResponderHandshake(BOB, swarm_secret=SECRET, job_code=None, versions=(1,),
                             pinned=None, rng=fixed_rng(b"b"))
    m_private, m_public = x25519_keypair(fixed_rng(b"m1"))
    m2_private, m2_public = x25519_keypair(fixed_rng(b"m2"))
    e_alice = alice.message1[9:41]
    to_bob = alice.message1[:9] + m_public + alice.message1[41:]
    from_bob = bob.receive_message1(to_bob).data
    clear, sealed = from_bob[:-144], from_bob[-144:]
    e_bob = clear[5:37]
    # Mallory's view of Bob's side: she can open Bob's sealed identity.
    th_bob = transcript_hash(transcript_hash(b"", to_bob), clear)
    secret_bob = kdf(SECRET, b"handshake", x25519(m_private, e_bob) + th_bob)
    plain = aead_open(kdf(secret_bob, b"responder seal", th_bob), sealed, th_bob)
    assert plain is not None and plain[:32] == BOB.public_key
    # Re-encrypt Bob's key and signature for Alice, with a valid MAC under Alice's keys.
    clear_alice = clear[:5] + m2_public + clear[37:]
    th_alice = transcript_hash(transcript_hash(b"", alice.message1), clear_alice)
    secret_alice = kdf(SECRET, b"handshake", x25519(m2_private, e_alice) + th_alice)
    mac = kdf(kdf(secret_alice, b"responder mac", th_alice), b"identity", BOB.public_key)
    resealed = aead_seal(
        kdf(secret_alice, b"responder seal", th_alice), plain[:96] + mac, th_alice
    )
    with pytest.raises(RemoteProtocolError, match="signature does not cover this handshake"):
        alice.receive_message2(clear_alice + resealed)


class _Impostor:
    """Claims Bob's public key but can only sign with Mallory's key."""

    public_key = BOB.public_key
    node_id = BOB.node_id
    sign = staticmethod(MALLORY.sign)


def test_signature_by_another_key_fails() -> None:
    alice = InitiatorHandshake(ALICE, swarm_secret=SECRET, job_code=None, versions=(1,),
                               pinned={BOB.node_id}, rng=fixed_rng(b"a"))
    impostor = ResponderHandshake(_Impostor(), swarm_secret=SECRET, job_code=None,  # type: ignore[arg-type]
                                  versions=(1,), pinned=None, rng=fixed_rng(b"b"))
    reply = impostor.receive_message1(alice.message1).data
    with pytest.raises(RemoteProtocolError, match="signature by another key"):
        alice.receive_message2(reply)


def test_versions_negotiate_to_the_highest_common() -> None:
    a, b = connect(initiator={"versions": (1, 2, 3)}, responder={"versions": (1, 2)})
    done_a, done_b = handshake(a, b)
    assert done_a.version == done_b.version == 2  # type: ignore[union-attr]


def _strip_version_2(message1: bytes) -> bytes:
    # frame prefix (4) + magic (4) + format + mode, then count 2 and versions 1, 2
    assert message1[10:15] == bytes([2, 0, 1, 0, 2])
    body = message1[4:10] + bytes([1, 0, 1]) + message1[15:]
    return len(body).to_bytes(4, "big") + body


def test_version_downgrade_is_detected() -> None:
    """Stripping version 2 from Alice's offer makes Bob pick 1; Alice notices."""
    a, b = connect(initiator={"versions": (1, 2)}, responder={"versions": (1, 2)})
    b.receive_data(_strip_version_2(a.data_to_send()))
    b.next_event()
    a.receive_data(b.data_to_send())
    with pytest.raises(RemoteProtocolError, match="version downgrade"):
        a.next_event()


def test_version_downgrade_hiding_both_offers_fails_on_the_transcript() -> None:
    """Rewriting Bob's offer too gets past the version check, not past the transcript."""
    a, b = connect(initiator={"versions": (1, 2)}, responder={"versions": (1, 2)})
    b.receive_data(_strip_version_2(a.data_to_send()))
    b.next_event()
    message2 = b.data_to_send()
    assert message2[4:11] == bytes([0, 1, 2, 0, 1, 0, 2])
    body = message2[4:6] + bytes([1, 0, 1]) + message2[11:]
    a.receive_data(len(body).to_bytes(4, "big") + body)
    with pytest.raises(RemoteProtocolError, match="a handshake message was altered"):
        a.next_event()


def test_no_common_version_is_refused_with_a_reason() -> None:
    a, b = connect(initiator={"versions": (3,)}, responder={"versions": (1, 2)})
    b.receive_data(a.data_to_send())
    with pytest.raises(RemoteProtocolError, match="no common protocol version"):
        b.next_event()
    a.receive_data(b.data_to_send())  # the refusal, sent before closing
    with pytest.raises(RemoteProtocolError, match=r"this node speaks \[3\], the peer .*\[1, 2\]"):
        a.next_event()


def test_job_code_handshake() -> None:
    a, b = connect(initiator={"swarm_secret": None, "job_code": CODE},
                   responder={"swarm_secret": None, "job_code": CODE})
    done_a, done_b = handshake(a, b)
    assert done_a.mode is done_b.mode is AuthMode.JOB_CODE  # type: ignore[union-attr]


def test_wrong_job_code_fails() -> None:
    a, b = connect(initiator={"swarm_secret": None, "job_code": JobCode("12345678902")},
                   responder={"job_code": CODE})
    with pytest.raises(RemoteProtocolError, match="different job code"):
        handshake(a, b)


def test_responder_with_both_admits_both_kinds() -> None:
    a, b = connect(responder={"job_code": CODE})
    assert handshake(a, b)[1].mode is AuthMode.SWARM  # type: ignore[union-attr]
    a, b = connect(initiator={"swarm_secret": None, "job_code": CODE},
                   responder={"job_code": CODE})
    assert handshake(a, b)[1].mode is AuthMode.JOB_CODE  # type: ignore[union-attr]


def test_job_code_is_refused_where_none_is_running() -> None:
    a, b = connect(initiator={"swarm_secret": None, "job_code": CODE})
    b.receive_data(a.data_to_send())
    with pytest.raises(RemoteProtocolError, match="refused"):
        b.next_event()
    a.receive_data(b.data_to_send())
    with pytest.raises(RemoteProtocolError, match="does not accept a job code"):
        a.next_event()


def test_not_an_octop2p_peer() -> None:
    _, b = connect()
    b.receive_data(b"GET / HTTP/1.1\r\n\r\n")
    with pytest.raises(RemoteProtocolError, match="exceeds the limit of 512"):
        b.next_event()
    _, b = connect()
    b.receive_data(b"\x00\x00\x00\x05hello")
    with pytest.raises(RemoteProtocolError, match="bad magic"):
        b.next_event()


Mutation = Callable[[bytes], bytes]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[int, Mutation]:
    """Which handshake message (0-2) to damage, and how."""
    which = draw(st.integers(0, 2))
    how = draw(st.sampled_from(["flip", "truncate", "extend", "splice", "body"]))
    position = draw(st.integers(0, 400))
    bit = draw(st.integers(0, 7))
    junk = draw(st.binary(min_size=1, max_size=40))

    def mutate(data: bytes) -> bytes:
        i = position % len(data)
        if how == "flip":
            return data[:i] + bytes([data[i] ^ (1 << bit)]) + data[i + 1 :]
        if how == "truncate":
            return data[:i]
        if how == "extend":
            return data + junk
        if how == "splice":
            return data[:i] + junk + data[i + len(junk) :]
        body = data[4:]  # damage the body but keep the frame well formed
        j = position % len(body)
        body = body[:j] + junk + body[j:]
        return len(body).to_bytes(4, "big") + body

    return which, mutate


@settings(max_examples=300, deadline=None)
@given(mutations())
def test_damaged_handshakes_fail_with_remote_errors_only(mutation: tuple[int, Mutation]) -> None:
    """Any change to any handshake message ends in a RemoteProtocolError, nothing else."""
    which, mutate = mutation
    a, b = connect()
    tracemalloc.start()
    changed = False
    try:
        for step, (source, target) in enumerate([(a, b), (b, a), (a, b)]):
            data = source.data_to_send()
            damaged = mutate(data) if step == which else data
            changed |= damaged != data
            target.receive_data(damaged)
            target.next_event()
        # Trailing junk after a message surfaces once the peers hang up.
        for side in (a, b):
            side.receive_data(b"")
            side.next_event()
    except RemoteProtocolError:
        pass
    else:
        assert not changed, "a damaged handshake went unnoticed"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1 << 20


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_random_bytes_into_a_handshake_are_remote_errors(data: bytes, framed: bool) -> None:
    a, b = connect()
    if framed:
        data = len(data).to_bytes(4, "big") + data
    for target in (a, b):
        target.receive_data(data)
        try:
            target.next_event()
        except RemoteProtocolError:
            pass


def test_known_answer_job_code_handshake() -> None:
    """SPAKE2 draws from the rng it is handed, so the job-code handshake is pinned too."""
    a, b = connect(initiator={"swarm_secret": None, "job_code": CODE},
                   responder={"swarm_secret": None, "job_code": CODE})
    message1 = a.data_to_send()
    assert hashlib.sha256(message1).hexdigest() == (
        "455907ddd86faa7ec146d98880fb054c33c34930e4d28af9eb94a6bb6c7ec795"
    )
    b.receive_data(message1)
    b.next_event()
    a.receive_data(b.data_to_send())
    done = a.next_event()
    assert isinstance(done, HandshakeComplete)
    assert done.session_id.hex() == "1528bc1b0389083b4a61fc74a7ca0dbf"


def test_a_server_can_count_failed_job_code_attempts() -> None:
    a, b = connect(initiator={"swarm_secret": None, "job_code": JobCode("12345678902")},
                   responder={"job_code": CODE})
    assert b.auth_mode is None
    b.receive_data(a.data_to_send())
    b.next_event()
    assert b.auth_mode is AuthMode.JOB_CODE
    a.receive_data(b.data_to_send())
    with pytest.raises(RemoteProtocolError):
        a.next_event()
    b.receive_data(b"")  # the client gives up: one failed attempt for the server to count
    with pytest.raises(RemoteProtocolError):
        b.next_event()
    assert b.auth_mode is AuthMode.JOB_CODE
