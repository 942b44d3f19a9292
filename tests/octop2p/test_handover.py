"""Handover, with no trio: results a worker computed for a chief's run before it
restarted are adopted by the machine only where they may count (docs/jobs.md, "When the
chief restarts")."""

from __future__ import annotations

import hashlib

import pytest

from octop2p.engine import _handover
from octop2p.engine._handover import HandedIn, HandoverDesk
from octop2p.engine._limits import Limits
from octop2p.engine._machine import Adoption, JobMachine, Trust
from octop2p.engine._scheduler import Verdict

LIMITS = Limits(wall_seconds=10)


def ran(fragment: bytes):
    """A `matches` for a worker that ran ``fragment`` (as the chief checks a digest)."""
    digest = hashlib.blake2b(fragment).digest()
    return lambda payload: hashlib.blake2b(payload).digest() == digest


def machine(n: int, *, redundancy: int = 1, settled: set[int] | None = None,
            exhausted: bool = True, **kw) -> JobMachine:
    m = JobMachine(LIMITS, redundancy=redundancy, **kw)
    m.begin("process", settled=settled)
    m.split([b"f%d" % i for i in range(n)], exhausted)
    return m


def adopt(m: JobMachine, worker: str, seq: int, data: bytes | None, *,
          fragment: bytes | None = None, now: float = 0.0):
    return m.adopt(worker, "process", seq, ran(fragment or b"f%d" % seq), data, now)


def test_a_result_for_a_fragment_already_merged_is_dropped() -> None:
    m = machine(3)
    m.join("w1", "n1", cap=4)
    m.credit("w1", 1)
    (a,) = m.take("w1", 0.0)
    assert m.result("w1", "process", a.seq, b"r0", 0.0) is Verdict.ACCEPT
    m.join("d1", "n2", cap=4)
    assert adopt(m, "d1", 0, b"r0") == (Adoption.DONE, None)
    assert m.accepted == 1  # merged once
    # A fragment settled before the chief restarted is done as well.
    r = machine(3, settled={1})
    r.join("d1", "n2", cap=4)
    assert adopt(r, "d1", 1, b"r1") == (Adoption.DONE, None)
    assert r.accepted == 0


def test_a_result_for_another_fragment_is_refused() -> None:
    m = machine(3)
    m.join("d1", "n2", cap=4)
    outcome, verdict = adopt(m, "d1", 1, b"evil", fragment=b"not f1")
    assert (outcome, verdict) == (Adoption.MISMATCH, None)
    assert m.accepted == 0
    assert any("another fragment 1" in line for line in m.drain_log())
    # Fragment 1 is still open, and goes to a worker as usual.
    m.credit("d1", 3)
    assert [a.seq for a in m.take("d1", 0.0)] == [0, 1, 2]


def test_a_handed_in_result_is_one_vote_under_redundancy() -> None:
    m = machine(2, redundancy=2)
    m.join("d1", "n1", cap=4)
    m.join("d2", "n1", cap=4)  # another worker of the same node
    m.join("w3", "n3", cap=4)
    assert adopt(m, "d1", 0, b"r0") == (Adoption.ADOPTED, Verdict.WAIT)
    # The same node votes once: its second worker's copy is dropped.
    assert adopt(m, "d2", 0, b"r0") == (Adoption.DONE, None)
    assert m.accepted == 0
    # A second node must agree before fragment 0 is accepted.
    m.credit("w3", 1)
    assert [a.seq for a in m.take("w3", 0.0)] == [0]
    assert m.result("w3", "process", 0, b"r0", 0.0) is Verdict.ACCEPT
    assert sorted(m.last_accepted[1]) == ["n1", "n3"]


def test_adaptive_verification_asks_a_second_node_for_an_untrusted_donor() -> None:
    m = machine(1, trust=Trust(verify="adaptive", trust_after=5, spot_share=0.0))
    m.join("d1", "n1", cap=4)
    m.join("w2", "n2", cap=4)
    assert adopt(m, "d1", 0, b"r0") == (Adoption.ADOPTED, Verdict.WAIT)
    m.credit("w2", 1)
    assert [a.seq for a in m.take("w2", 0.0)] == [0]


def test_a_running_fragment_becomes_the_workers_lease() -> None:
    m = machine(3, exhausted=False)
    m.join("d1", "n1", cap=4)
    m.join("w2", "n2", cap=4)
    assert adopt(m, "d1", 1, None, now=5.0) == (Adoption.ADOPTED, None)
    m.credit("w2", 3)
    assert [a.seq for a in m.take("w2", 5.0)] == [0, 2]  # 1 is d1's, not re-leased
    assert m.result("d1", "process", 1, b"r1", 6.0) is Verdict.ACCEPT
    # A lease like any: it ends when the worker leaves.
    m2 = machine(2)
    m2.join("d1", "n1", cap=4)
    adopt(m2, "d1", 0, None)
    assert m2.leave("d1") == [0]


def test_unknown_workers_phases_and_fragments_are_dropped() -> None:
    m = machine(2)
    m.join("d1", "n1", cap=4)
    assert adopt(m, "nobody", 0, b"r0") == (Adoption.UNKNOWN, None)
    assert m.adopt("d1", "map", 0, ran(b"f0"), b"r0", 0.0) == (Adoption.UNKNOWN, None)
    assert adopt(m, "d1", 7, b"r7") == (Adoption.UNKNOWN, None)  # past the end
    banned = machine(2, trust=Trust(banned={"n9": "lied"}))
    banned.join("q1", "n9", cap=4)
    assert adopt(banned, "q1", 0, b"r0") == (Adoption.UNKNOWN, None)


def test_the_desk_keeps_what_the_splitter_has_not_produced_yet() -> None:
    m = JobMachine(LIMITS)
    m.begin("process")
    m.join("d1", "n1", cap=4)
    desk = HandoverDesk()
    assert desk.offer(m, HandedIn("d1", "process", 3, ran(b"f3"), b"r3"), 0.0) == []
    assert desk.offer(m, HandedIn("d1", "process", 4, ran(b"f4")), 0.0) == []
    m.split([b"f0", b"f1", b"f2", b"f3"], False)
    accepted = desk.retry(m, 1.0)
    assert [(i.seq, i.data) for i in accepted] == [(3, b"r3")]
    m.split([b"f4"], True)
    assert desk.retry(m, 1.0) == []  # 4 is running on d1: its lease now
    m.credit("d1", 4)
    assert [a.seq for a in m.take("d1", 1.0)] == [0, 1, 2]
    assert "adopted 1 results and 1 running fragments" in desk.news()
    assert desk.news() == ""  # said once


def test_the_desk_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_handover, "MAX_PENDING", 2)
    m = JobMachine(LIMITS)
    m.begin("process")
    m.join("d1", "n1", cap=4)
    desk = HandoverDesk()
    for seq in range(5):
        desk.offer(m, HandedIn("d1", "process", 10 + seq, ran(b"x"), b"r"), 0.0)
    assert desk.counts == {"over bounds": 3}
    assert "3 over the handover's bounds" in desk.news()
