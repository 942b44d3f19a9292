"""A donor's Handback, with no trio and no link: what it keeps for a chief that may come
back, within its bounds (docs/jobs.md, "When the chief restarts")."""

from __future__ import annotations

import pytest

from octop2p.net import _handback
from octop2p.net._handback import RECENT_SECONDS, Handback
from protocol import Envelope, EnvelopeKind, NodeIdentity, Result

DONOR = NodeIdentity.generate()


def result(seq: int, size: int = 10) -> Result:
    return Result(envelope=Envelope.sign(DONOR, EnvelopeKind.RESULT, bytes(16), seq,
                                         b"x" * size, ref=bytes(32)))


def seqs(messages: list) -> list[int]:
    return [m.envelope.seq for m in messages]


def test_recent_results_and_held_ones_are_handed_in_in_order() -> None:
    h = Handback(cores=1)
    h.sent([result(0)], now=0.0)
    h.sent([result(1), result(2)], now=RECENT_SECONDS - 1)
    h.forget(RECENT_SECONDS + 0.5)  # result 0 was sent too long ago to be missed
    h.hold([result(3)])
    assert h.has_work() and h.held == 1
    assert seqs(h.hand_in()) == [1, 2, 3]
    assert not h.has_work() and h.hand_in() == []


def test_credits_asked_and_never_met_are_owed_to_a_new_link() -> None:
    h = Handback(cores=1)
    h.granted += 4
    h.received += 3
    assert h.owed == 1
    h.received += 2  # the chief over-delivered: nothing owed, never negative
    assert h.owed == 0


def test_what_is_kept_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_handback, "MAX_KEPT_PER_CORE", 3)
    h = Handback(cores=1)
    h.sent([result(0), result(1)], now=0.0)
    h.hold([result(2), result(3)])  # recent results go first: the chief may have them
    assert seqs(h.hand_in()) == [1, 2, 3] and h.dropped == 1
    monkeypatch.setattr(_handback, "MAX_KEPT_BYTES", 250)
    h.hold([result(seq, size=100) for seq in range(4)])
    assert seqs(h.hand_in()) == [2, 3]
