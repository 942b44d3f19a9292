"""Node ids, swarm join codes and job codes: formats, tolerance, typo detection."""

from __future__ import annotations

import pytest

from protocol import CodeError, JobCode, KeyFileError, NodeId, NodeIdentity, SwarmCode
from protocol._codes import ALPHABET

from .support import ALICE, fixed_rng


def test_node_id_known_answer() -> None:
    identity = NodeIdentity(bytes(range(32)))
    assert identity.public_key.hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    )
    assert str(identity.node_id) == "4KKXFPD-D4JYIXG-MTYFJLN-CIGSZIC"
    assert identity.node_id.short == "4KKXFPD"


def test_node_id_parse_forgives_case_spaces_and_lookalikes() -> None:
    text = str(ALICE.node_id)
    assert NodeId.parse(text) == ALICE.node_id
    assert NodeId.parse(" " + text.lower().replace("-", " ") + "\n") == ALICE.node_id
    assert NodeId.parse(text.replace("-", "")) == ALICE.node_id
    lookalike = text.replace("O", "0").replace("I", "1").replace("B", "8")
    assert NodeId.parse(lookalike) == ALICE.node_id


def test_node_id_catches_every_single_substitution() -> None:
    text = str(ALICE.node_id)
    for position, char in enumerate(text):
        if char == "-":
            continue
        for other in ALPHABET.replace(char, ""):
            with pytest.raises(CodeError):
                NodeId.parse(text[:position] + other + text[position + 1 :])


def test_node_id_catches_adjacent_transpositions() -> None:
    text = str(ALICE.node_id).replace("-", "")
    for i in range(len(text) - 1):
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        if swapped != text:
            with pytest.raises(CodeError):
                NodeId.parse(swapped)


@pytest.mark.parametrize(
    ("text", "message"),
    [("ABC", "has 3"), ("4KKXFPD-D4JYIXG-MTYFJLN-CIGSZI9", "cannot contain '9'")],
)
def test_node_id_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CodeError, match=message):
        NodeId.parse(text)


def test_identity_store_and_load() -> None:
    stored = ALICE.to_bytes()
    assert stored.startswith(b"octop2p node key v1\n")
    loaded = NodeIdentity.from_bytes(stored)
    assert loaded.public_key == ALICE.public_key
    assert repr(loaded) == f"NodeIdentity({ALICE.node_id})"
    assert b"seed" not in repr(loaded).encode()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b"\xff" + b,
        lambda b: b.replace(b"v1", b"v9"),
        lambda b: b[:40],
        lambda b: b.replace(b"seed: ", b"seed: 0"),
        # one flipped hex digit in the seed: caught by the id stored beside it
        lambda b: b[:30] + (b"1" if b[30:31] != b"1" else b"2") + b[31:],
    ],
)
def test_identity_damage_is_caught(damage: object) -> None:
    with pytest.raises(KeyFileError):
        NodeIdentity.from_bytes(damage(ALICE.to_bytes()))  # type: ignore[operator]


def test_swarm_code_round_trip_and_known_answer() -> None:
    code = SwarmCode.generate(fixed_rng(b"swarm"))
    assert SwarmCode.parse(str(code)) == code
    assert SwarmCode.parse(str(code).lower().replace("-", " ")) == code
    assert SwarmCode.parse(str(code).replace("-", "")[4:]) == code  # prefix optional
    fixed = SwarmCode(bytes(range(8)), bytes(range(32)))
    assert str(fixed) == (
        "OCTO-AEAACA-QDAQCQ-MBYAAE-BAGBAF-AYDQQC-IKBMGA-2DQPCA-IREEYU-CULBOG-AZDINR-"
        "YHI6D6-FGDRQ4"
    )


def test_swarm_code_hides_its_secret() -> None:
    code = SwarmCode.generate(fixed_rng(b"swarm"))
    assert code.secret.hex() not in repr(code)
    assert "hidden" in repr(code)


def test_swarm_code_catches_typos() -> None:
    text = str(SwarmCode.generate(fixed_rng(b"swarm")))
    for position in range(5, len(text)):
        if text[position] == "-":
            continue
        other = "A" if text[position] != "A" else "B"
        with pytest.raises(CodeError, match="typo"):
            SwarmCode.parse(text[:position] + other + text[position + 1 :])
    with pytest.raises(CodeError, match="72 characters"):
        SwarmCode.parse(text[:-3])
    with pytest.raises(CodeError, match="cannot contain"):
        SwarmCode.parse(text[:-1] + "9")


def test_job_code_format_and_typos() -> None:
    code = JobCode.generate(fixed_rng(b"job"))
    text = str(code)
    assert len(text) == 14 and text[4] == text[9] == "-"
    assert JobCode.parse(text) == code
    assert JobCode.parse(text.replace("-", " ")) == code
    assert code.digits not in repr(code)
    for position, char in enumerate(text):
        if char == "-":
            continue
        for digit in "0123456789".replace(char, ""):
            with pytest.raises(CodeError, match="typo"):
                JobCode.parse(text[:position] + digit + text[position + 1 :])
    with pytest.raises(CodeError, match="12 digits"):
        JobCode.parse("1234-5678")
