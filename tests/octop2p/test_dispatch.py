"""The job machine's dispatch: what one round hands out, and what it costs a chief with
many workers (issue 15: a chief's CPU per fragment must not grow with its donors).

A round runs after every burst of results and credits; with many donors each waiting
for a fragment or two, one round used to ask every worker in turn, so a chief's work per
fragment grew with its donors. These tests count the fragment table's ``take`` calls,
not time."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from octop2p.engine._limits import Limits
from octop2p.engine._machine import PREFETCH_PER_WORKER, JobMachine

LIMITS = Limits(wall_seconds=10)


def counting_takes(machine: JobMachine) -> list[str]:
    """Record each worker the fragment table's ``take`` is called for."""
    calls: list[str] = []
    table = machine.table
    real = table.take

    def take(worker: str, voter: str, n: int, now: float) -> Any:
        calls.append(worker)
        return real(worker, voter, n, now)

    table.take = take  # type: ignore[method-assign]
    return calls


def hungry_swarm(workers: int, credits: int) -> JobMachine:
    machine = JobMachine(LIMITS)
    machine.begin("process")
    for i in range(workers):
        machine.join(f"w{i}", f"V{i}", cap=128)
        machine.credit(f"w{i}", credits)
    return machine


def test_a_round_asks_only_the_workers_it_serves_however_many_wait() -> None:
    machine = hungry_swarm(64, credits=2)
    calls = counting_takes(machine)
    assert machine.dispatch(0) == []  # nothing queued: nobody is asked
    assert calls == []
    machine.split([b"x"], False)
    ((worker, (assigned,)),) = machine.dispatch(1)
    assert (worker, assigned.seq) == ("w0", 0)  # the first to join is served first
    assert calls == ["w0"]  # not one call for each of the 64 workers
    calls.clear()
    machine.split([b"y", b"z", b"t"], False)
    handed = machine.dispatch(2)
    # w0 has one credit left, then w1 takes two: three takes for three fragments.
    assert [(w, [a.seq for a in works]) for w, works in handed] == [
        ("w0", [1]), ("w1", [2, 3])]
    assert calls == ["w0", "w1"]


def test_a_round_fills_the_first_workers_window_before_the_next() -> None:
    machine = hungry_swarm(8, credits=64)
    machine.split([bytes([i]) for i in range(100)], False)
    handed = machine.dispatch(0)
    assert [(w, len(works)) for w, works in handed] == [("w0", 64), ("w1", 36)]


def test_at_a_phases_tail_every_idle_worker_is_asked_for_backup_copies() -> None:
    machine = hungry_swarm(3, credits=1)
    machine.split([b"a"], True)
    calls = counting_takes(machine)
    handed = machine.dispatch(0)
    assert [(w, [a.seq for a in works]) for w, works in handed][0] == ("w0", [0])
    assert calls == ["w0", "w1", "w2"]  # the queue is empty after w0: backups are asked for


def test_wanted_follows_credits_through_joins_takes_and_leaves() -> None:
    machine = hungry_swarm(3, credits=5)
    assert machine.wanted() == 15 + PREFETCH_PER_WORKER * 3
    machine.split([b"a", b"b", b"c", b"d"], False)
    machine.dispatch(0)  # w0 takes four: its credit drops by four
    assert machine.wanted() == 11 + PREFETCH_PER_WORKER * 3
    machine.leave("w1")
    assert machine.wanted() == 6 + PREFETCH_PER_WORKER * 2
    machine.credit("w0", 500)  # capped at 128
    assert machine.wanted() == 128 + 5 + PREFETCH_PER_WORKER * 2


OPS = st.lists(st.tuples(st.sampled_from(["join", "leave", "credit", "split", "answer",
                                          "dispatch", "end"]),
                         st.integers(0, 5), st.integers(0, 9)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, redundancy=st.integers(1, 2))
def test_dispatch_hands_out_what_asking_every_worker_in_turn_would(
        ops: list[tuple[str, int, int]], redundancy: int) -> None:
    """Against the old round (every worker asked in the order it joined): the same
    fragments to the same workers, and the same pull on the splitter."""
    new, old = (JobMachine(LIMITS, redundancy=redundancy) for _ in range(2))
    for m in (new, old):
        m.begin("process")
    produced = 0
    for step, (op, i, k) in enumerate(ops):
        worker = f"w{i}"
        for m in (new, old):
            if op == "join":
                m.join(worker, f"V{i % 3}", cap=k + 1)
            elif op == "leave":
                m.leave(worker)
            elif op == "credit":
                m.credit(worker, k)
            elif op == "split" and not m.table.exhausted:
                m.split([bytes([produced + j]) for j in range(k)], False)
            elif op == "end":
                m.table.mark_exhausted()
            elif op == "answer":
                for w in m.workers:
                    for seq in m.table.leased_to(w)[:k]:
                        m.result(w, "process", seq, b"r%d" % seq, step)
        if op == "split" and not new.table.exhausted:
            produced += k
        if op == "dispatch":
            got = [(w, [a.seq for a in ws]) for w, ws in new.dispatch(step)]
            want = [(w, [a.seq for a in ws]) for w in list(old.workers)
                    if (ws := old.take(w, step))]
            assert got == want
        demand = sum(w.credits for w in new.workers.values())
        demand += PREFETCH_PER_WORKER * max(1, len(new.workers))
        assert new.wanted() == (0 if new.table.exhausted
                                else max(0, demand - new.table.copies_queued()))
        assert {w: x.credits for w, x in new.workers.items()} == {
            w: x.credits for w, x in old.workers.items()}
