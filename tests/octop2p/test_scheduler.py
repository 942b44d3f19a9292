"""The chief's pure scheduling policy: credits, leases, retries, redundancy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octop2p.engine._scheduler import FragmentFailed, Scheduler, Verdict


def test_pulls_only_what_credits_and_prefetch_need() -> None:
    s = Scheduler(prefetch=2)
    assert s.wanted() == 2
    s.offer_credits("w1", 3)
    assert s.wanted() == 5
    s.add_fragments([b"a", b"b"])
    assert s.wanted() == 3
    s.mark_exhausted()
    assert s.wanted() == 0


def test_credits_bound_what_a_worker_gets_and_leases_hold_until_result() -> None:
    s = Scheduler(prefetch=0)
    s.add_fragments([b"0", b"1", b"2"])
    s.offer_credits("w1", 2)
    got = s.assign("w1", now=0)
    assert [a.seq for a in got] == [0, 1]
    assert s.leased_to("w1") == [0, 1]
    assert s.assign("w1", now=0) == []  # no credits left
    assert s.complete("w1", 0) is Verdict.ACCEPT
    assert s.complete("w1", 0) is Verdict.DUPLICATE  # a late duplicate is dropped
    assert s.leased_to("w1") == [1]


def test_lost_worker_gives_its_fragments_to_another() -> None:
    s = Scheduler(prefetch=0)
    s.add_fragments([b"0", b"1"])
    s.mark_exhausted()
    s.offer_credits("w1", 2)
    s.assign("w1", now=0)
    assert s.release("w1") == [0, 1]
    s.offer_credits("w2", 5)
    assert [a.seq for a in s.assign("w2", now=1)] == [0, 1]
    assert s.complete("w1", 0) is Verdict.DUPLICATE  # its lease is gone
    assert s.complete("w2", 0) is Verdict.ACCEPT
    assert s.complete("w2", 1) is Verdict.ACCEPT
    assert s.finished


def test_expired_lease_requeues() -> None:
    s = Scheduler(prefetch=0, lease_seconds=10)
    s.add_fragments([b"0"])
    s.offer_credits("w1", 1)
    s.assign("w1", now=0)
    assert s.expire(now=5) == []
    assert s.expire(now=10) == [("w1", 0)]
    s.offer_credits("w2", 1)
    assert [a.seq for a in s.assign("w2", now=11)] == [0]


def test_fragment_that_keeps_failing_fails_the_job() -> None:
    s = Scheduler(prefetch=0, max_attempts=3)
    s.add_fragments([b"boom"])
    for attempt in range(3):
        s.offer_credits("w1", 1)
        assert [a.seq for a in s.assign("w1", now=attempt)] == [0]
        if attempt < 2:
            s.fail("w1", 0)
    with pytest.raises(FragmentFailed) as info:
        s.fail("w1", 0)
    assert info.value.seq == 0 and info.value.attempts == 3


def test_redundancy_needs_agreeing_results_from_distinct_workers() -> None:
    s = Scheduler(prefetch=0, redundancy=2)
    s.add_fragments([b"x"])
    s.mark_exhausted()
    s.offer_credits("w1", 5)
    assert [a.seq for a in s.assign("w1", now=0)] == [0]  # one copy per worker
    s.offer_credits("w2", 5)
    assert [a.seq for a in s.assign("w2", now=0)] == [0]
    assert s.complete("w1", 0, b"good") is Verdict.WAIT
    assert s.complete("w2", 0, b"evil") is Verdict.WAIT  # disagreement: a third opinion
    s.offer_credits("w3", 1)
    assert [a.seq for a in s.assign("w3", now=0)] == [0]
    assert s.complete("w3", 0, b"good") is Verdict.ACCEPT
    assert s.finished


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    workers=st.integers(1, 4),
    ops=st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 5), st.sampled_from("acl")), max_size=200
    ),
)
def test_every_fragment_is_accepted_exactly_once(n: int, workers: int, ops: list) -> None:
    """Whatever workers come, go and fail, each fragment is accepted once and only once."""
    s = Scheduler(prefetch=1, max_attempts=10**9)
    names = [f"w{i}" for i in range(workers)]
    s.add_fragments([str(i).encode() for i in range(n)])
    s.mark_exhausted()
    accepted: list[int] = []

    def step(w: str, credits: int, op: str) -> None:
        s.offer_credits(w, credits)
        got = s.assign(w, now=0)
        for a in got:
            if op == "l":
                s.release(w)
                return
            if op == "c" and a.seq % 3 == 0:
                s.fail(w, a.seq)
                continue
            if s.complete(w, a.seq) is Verdict.ACCEPT:
                accepted.append(a.seq)

    for wi, credits, op in ops:
        step(names[wi % workers], credits, op)
    while not s.finished:  # then a healthy worker drains the rest
        step("drain", 8, "a")
    assert sorted(accepted) == list(range(n))


def test_remote_worker_credits_are_capped() -> None:
    """A worker cannot make the chief pull the whole splitter ahead by asking for credits."""
    from pathlib import Path

    from octop2p.engine._limits import Limits
    from octop2p.engine._package import load_job
    from octop2p.engine._runner import Chief, Phase

    spec = load_job(Path(__file__).parents[2] / "examples" / "primes", Limits())
    chief = Chief(
        spec,
        None,
        workers=0,
        work_dir=Path("/nonexistent"),  # type: ignore[arg-type]
        layers=frozenset(),
        remote=True,
    )
    sched = Scheduler(prefetch=2)
    chief._enter_phase(Phase("process", sched, lambda seq, data: None))
    chief.remote_credits("w", 65536, cap=256)
    chief.remote_credits("w", 65536, cap=256)
    assert sched.credits_of("w") == 256
    assert sched.wanted() == 256 + 2  # what the splitter is pulled ahead by


def test_requeued_fragments_come_back_in_order_crashing_one_first() -> None:
    """After a child dies on fragment 3 holding 3-6, the next batch starts with 3, then
    4, 5, 6: the fragment that crashed is first in a fresh child, not fourth again."""
    s = Scheduler(prefetch=0)
    s.add_fragments([b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"])
    s.offer_credits("w", 3)
    for a in s.assign("w", now=0):
        s.complete("w", a.seq)
    s.offer_credits("w", 4)
    assert [a.seq for a in s.assign("w", now=0)] == [3, 4, 5, 6]
    s.fail("w", 3)
    for seq in (4, 5, 6):
        s.giveback("w", seq)
    s.offer_credits("w", 5)
    assert [a.seq for a in s.assign("w", now=0)] == [3, 4, 5, 6, 7]
