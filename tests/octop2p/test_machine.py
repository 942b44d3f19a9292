"""The job machine, with no trio: table-driven scenarios and a property test.

Each scenario is a list of steps fed to one machine; each step says what the machine
must answer. Workers are named ``w1``.. and vote as the voter given when they join
(a node id for a donor, or the chief's own node for all its slots).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octop2p.engine._limits import Limits
from octop2p.engine._machine import JobMachine, WorkFailure
from octop2p.engine._scheduler import BACKUP_FLOOR_SECONDS, Verdict
from octop2p.errors import JobFailed

LIMITS = Limits(wall_seconds=10)  # leases of 2 * 10 + 10 = 30 s
OOPS = WorkFailure("ZeroDivisionError: division by zero", traceback="Traceback ...",
                   file="Process.py", line=3, deterministic=True)
CRASH = WorkFailure("the child was killed (memory)", rule="memory")


def play(machine: JobMachine, steps: list[tuple[Any, ...]]) -> None:
    """Run ``steps``; each checks the machine's answer."""
    for i, (op, *args) in enumerate(steps):
        where = f"step {i}: {op} {args}"
        if op == "join":
            worker, voter = args
            machine.join(worker, voter, cap=100)
        elif op == "credit":
            machine.credit(*args)
        elif op == "split":
            n, exhausted = args
            base = machine.table.produced
            machine.split([b"f%d" % (base + k) for k in range(n)], exhausted)
        elif op == "take":
            worker, now, seqs = args
            assert [a.seq for a in machine.take(worker, now)] == seqs, where
        elif op == "result":
            worker, seq, data, now, verdict = args
            assert machine.result(worker, "process", seq, data, now) is verdict, where
        elif op == "fail":
            worker, seq, failure, now, raises = args
            if raises:
                with pytest.raises(JobFailed, match=raises):
                    machine.failure(worker, "process", seq, failure, now)
            else:
                machine.failure(worker, "process", seq, failure, now)
        elif op == "giveback":
            machine.giveback(*args[:1], "process", args[1])
        elif op == "tick":
            now, ended = args
            assert machine.tick(now) == ended, where
        elif op == "leave":
            worker, seqs = args
            assert machine.leave(worker) == seqs, where
        elif op == "waiting":
            (text,) = args
            got = machine.waiting()
            assert (text in got) if text else got == "", f"{where}: {got!r}"
        elif op == "finished":
            assert machine.finished is args[0], where
        else:  # pragma: no cover - a typo in a table
            raise AssertionError(f"unknown step {op}")


SCENARIOS: dict[str, tuple[int, list[tuple[Any, ...]]]] = {
    # name: (redundancy, steps)
    "credits bound what a worker gets; a duplicate is dropped": (1, [
        ("join", "w1", "A"), ("split", 3, True), ("credit", "w1", 2),
        ("take", "w1", 0, [0, 1]), ("take", "w1", 0, []),
        ("result", "w1", 0, b"r", 1, Verdict.ACCEPT),
        ("result", "w1", 0, b"r", 1, Verdict.DUPLICATE),
        ("credit", "w1", 5), ("take", "w1", 1, [2]),
        ("result", "w1", 1, b"r", 2, Verdict.ACCEPT), ("result", "w1", 2, b"r", 2, Verdict.ACCEPT),
        ("finished", True),
    ]),
    "redundancy 2: two donors with the same content agree": (2, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("split", 1, True),
        ("credit", "w1", 5), ("credit", "w2", 5),
        ("take", "w1", 0, [0]), ("take", "w2", 0, [0]),
        ("result", "w1", 0, b"same", 1, Verdict.WAIT),
        ("result", "w2", 0, b"same", 1, Verdict.ACCEPT), ("finished", True),
    ]),
    "redundancy 2: a disagreement goes to a third donor": (2, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("join", "w3", "C"), ("split", 1, True),
        ("credit", "w1", 1), ("credit", "w2", 1), ("credit", "w3", 1),
        ("take", "w1", 0, [0]), ("take", "w2", 0, [0]), ("take", "w3", 0, []),
        ("result", "w1", 0, b"good", 1, Verdict.WAIT),
        ("result", "w2", 0, b"evil", 1, Verdict.WAIT),
        ("take", "w3", 2, [0]), ("result", "w3", 0, b"good", 3, Verdict.ACCEPT),
    ]),
    "redundancy 2: slots of one node cannot outvote it; the job says why it waits": (2, [
        ("join", "w1", "chief"), ("join", "w2", "chief"), ("split", 1, True),
        ("credit", "w1", 1), ("credit", "w2", 1),
        ("take", "w1", 0, [0]), ("take", "w2", 0, []),
        ("result", "w1", 0, b"r", 1, Verdict.WAIT),
        ("take", "w2", 1, []),
        ("waiting", "redundancy = 2 needs 2 distinct workers; 1 in reach"),
        ("join", "w3", "B"), ("credit", "w3", 1), ("waiting", ""),
        ("take", "w3", 2, [0]), ("result", "w3", 0, b"r", 3, Verdict.ACCEPT),
    ]),
    "redundancy 3 with two donors waits and says for what": (3, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("split", 1, True),
        ("waiting", "redundancy = 3 needs 3 distinct workers; 2 in reach"),
    ]),
    "no worker at all: the job says so": (1, [
        ("split", 2, True), ("waiting", "no worker in reach"),
    ]),
    "an expired lease: the same worker may take it again and finish": (1, [
        ("join", "w1", "A"), ("split", 2, True), ("credit", "w1", 2),
        ("take", "w1", 0, [0, 1]),
        ("result", "w1", 0, b"r", 25, Verdict.ACCEPT),  # progress renews the lease to 55
        ("tick", 50, []), ("tick", 56, [("w1", 1)]),
        ("credit", "w1", 1), ("take", "w1", 57, [1]),
        ("result", "w1", 1, b"r", 58, Verdict.ACCEPT), ("finished", True),
    ]),
    "a late answer after expiry still counts, once": (1, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("split", 1, True),
        ("credit", "w1", 1), ("take", "w1", 0, [0]), ("tick", 31, [("w1", 0)]),
        ("credit", "w2", 1), ("take", "w2", 31, [0]),
        ("result", "w1", 0, b"r", 32, Verdict.ACCEPT),
        ("result", "w2", 0, b"r", 33, Verdict.DUPLICATE), ("finished", True),
    ]),
    "a lost worker's fragments go to another, logged": (1, [
        ("join", "w1", "A"), ("split", 2, True), ("credit", "w1", 2),
        ("take", "w1", 0, [0, 1]), ("leave", "w1", [0, 1]),
        ("waiting", "no worker in reach"),
        ("join", "w2", "B"), ("credit", "w2", 5), ("take", "w2", 1, [0, 1]),
    ]),
    "a crash is retried, up to max_attempts": (1, [
        ("join", "w1", "A"), ("split", 1, True), ("credit", "w1", 9),
        ("take", "w1", 0, [0]), ("fail", "w1", 0, CRASH, 1, None),
        ("take", "w1", 1, [0]), ("fail", "w1", 0, CRASH, 2, None),
        ("take", "w1", 2, [0]), ("fail", "w1", 0, CRASH, 3, "failed 3 times"),
    ]),
    "a fragment handed back unrun counts no attempt": (1, [
        ("join", "w1", "A"), ("split", 1, True), ("credit", "w1", 9),
        *[step for _ in range(5) for step in (("take", "w1", 0, [0]), ("giveback", "w1", 0))],
        ("take", "w1", 0, [0]), ("result", "w1", 0, b"r", 1, Verdict.ACCEPT),
    ]),
    "the job's own error fails the job at once with redundancy 1": (1, [
        ("join", "w1", "A"), ("split", 1, True), ("credit", "w1", 1),
        ("take", "w1", 0, [0]), ("fail", "w1", 0, OOPS, 1, "ZeroDivisionError"),
    ]),
    "redundancy 2: one worker's error is checked on another, which succeeds": (2, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("join", "w3", "C"), ("split", 1, True),
        ("credit", "w1", 1), ("credit", "w2", 1), ("credit", "w3", 1),
        ("take", "w1", 0, [0]), ("take", "w2", 0, [0]),
        ("fail", "w1", 0, OOPS, 1, None),
        ("result", "w2", 0, b"r", 1, Verdict.WAIT),
        ("take", "w3", 1, [0]), ("result", "w3", 0, b"r", 2, Verdict.ACCEPT),
    ]),
    "redundancy 2: an error confirmed on a second node fails the job": (2, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("split", 1, True),
        ("credit", "w1", 1), ("credit", "w2", 1),
        ("take", "w1", 0, [0]), ("take", "w2", 0, [0]),
        ("fail", "w1", 0, OOPS, 1, None), ("fail", "w2", 0, OOPS, 1, "ZeroDivisionError"),
    ]),
    "results that never agree fail the fragment": (2, [
        ("join", "w1", "A"), ("join", "w2", "B"), ("join", "w3", "C"), ("join", "w4", "D"),
        ("join", "w5", "E"), ("split", 1, True),
        *[("credit", w, 1) for w in ("w1", "w2", "w3", "w4", "w5")],
        ("take", "w1", 0, [0]), ("take", "w2", 0, [0]),
        ("result", "w1", 0, b"1", 1, Verdict.WAIT), ("result", "w2", 0, b"2", 1, Verdict.WAIT),
        ("take", "w3", 1, [0]), ("result", "w3", 0, b"3", 1, Verdict.WAIT),
        ("take", "w4", 1, [0]), ("result", "w4", 0, b"4", 1, Verdict.WAIT),
        ("take", "w5", 1, [0]),
    ]),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario(name: str) -> None:
    redundancy, steps = SCENARIOS[name]
    machine = JobMachine(LIMITS, redundancy=redundancy, backup_tasks=False)
    machine.begin("process")
    play(machine, steps)


def test_backup_tasks_take_the_tail_and_the_first_answer_wins() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("process")
    machine.join("slow", "S", cap=100)
    machine.join("fast", "F", cap=100)
    machine.split([b"0", b"1", b"2"], True)
    machine.credit("slow", 3)
    assert [a.seq for a in machine.take("slow", 0)] == [0, 1]  # its share of the tail
    machine.credit("fast", 3)
    assert [a.seq for a in machine.take("fast", 0)] == [2]
    machine.result("fast", "process", 2, b"r2", 1)
    # Nothing queued, but the copies out are no older than the phase's answers took.
    assert machine.take("fast", 1) == []
    # Once they are late (twice the median answer time, 1 s), the idle worker backs up
    # the oldest fragments still out, one at a time.
    assert [a.seq for a in machine.take("fast", 2.5)] == [0]
    assert [a.seq for a in machine.take("fast", 2.5)] == [1]
    assert machine.result("fast", "process", 0, b"r0", 3) is Verdict.ACCEPT
    assert machine.result("slow", "process", 0, b"r0", 4) is Verdict.DUPLICATE
    assert machine.result("slow", "process", 1, b"r1", 4) is Verdict.ACCEPT
    assert machine.result("fast", "process", 1, b"r1", 5) is Verdict.DUPLICATE
    assert machine.finished
    table = machine.table
    assert (table.backups, table.backups_won) == (2, 1)
    machine.begin("reduce", [])
    assert any("2 backup tasks ran, 1 finished first" in line for line in machine.drain_log())


def _tail(took: list[float]) -> JobMachine:
    """A phase whose first fragments took ``took`` seconds each from lease to answer,
    with the last one still out on worker "slow" since t = 100, and worker "idle" with
    credits and nothing left to take."""
    machine = JobMachine(LIMITS)
    machine.begin("process")
    machine.join("slow", "S", cap=100)
    machine.join("idle", "I", cap=100)
    machine.split([b"%d" % i for i in range(len(took) + 1)], True)
    for seq, seconds in enumerate(took):
        machine.credit("idle", 1)
        assert [a.seq for a in machine.take("idle", seq)] == [seq]
        machine.result("idle", "process", seq, b"r", seq + seconds)
    machine.credit("slow", 1)
    assert [a.seq for a in machine.take("slow", 100)] == [len(took)]
    machine.credit("idle", 10)
    return machine


def test_a_backup_starts_once_its_copy_out_is_late_not_before() -> None:
    machine = _tail([0.5] * 8)  # late: out for more than 2 * 0.5 s
    assert machine.backup_due(100.5) == pytest.approx(101.0)
    assert machine.take("idle", 100.9) == []  # young: no backup, credits kept
    assert machine.workers["idle"].credits == 10
    assert [a.seq for a in machine.take("idle", 101.1)] == [8]
    assert machine.table.backups == 1
    assert machine.backup_due(101.1) == math.inf  # backed up: no more timer for it
    assert machine.result("idle", "process", 8, b"r", 101.3) is Verdict.ACCEPT
    assert machine.table.backups_won == 1


def test_the_median_answer_decides_not_the_slowest() -> None:
    machine = _tail([0.4, 9.0, 0.5])  # one slow answer among them: median 0.5 s
    assert machine.take("idle", 100.9) == []
    assert [a.seq for a in machine.take("idle", 101.1)] == [3]


def test_backups_of_short_fragments_wait_for_the_floor() -> None:
    machine = _tail([0.001] * 8)
    assert machine.backup_due(100) == pytest.approx(100 + BACKUP_FLOOR_SECONDS)
    assert machine.take("idle", 100 + BACKUP_FLOOR_SECONDS / 2) == []
    assert [a.seq for a in machine.take("idle", 100 + BACKUP_FLOOR_SECONDS * 1.5)] == [8]


def test_results_handed_in_after_a_restart_are_no_answer_time() -> None:
    """A result a donor computed for the chief's earlier run is adopted and answered at
    once: it took no time here, and must not pull the median down."""
    machine = JobMachine(LIMITS)
    machine.begin("process")
    machine.join("back", "B", cap=100)
    machine.split([b"0", b"1", b"2"], True)
    for seq in (1, 2):
        adopted = machine.adopt("back", "process", seq, lambda p: True, b"r", 50)
        assert adopted[1] is Verdict.ACCEPT
    assert machine.table.backup_after() == BACKUP_FLOOR_SECONDS  # no answer time yet
    machine.credit("back", 1)
    assert [a.seq for a in machine.take("back", 50)] == [0]
    machine.result("back", "process", 0, b"r", 50.5)
    assert machine.table.backup_after() == pytest.approx(1.0)  # 2 * 0.5 s


def test_with_no_answer_yet_the_floor_alone_decides() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("reduce", [0])
    machine.join("busy", "B", cap=100)
    machine.join("idle", "I", cap=100)
    machine.credit("busy", 1)
    assert [a.seq for a in machine.take("busy", 5)] == [0]
    machine.credit("idle", 1)
    assert machine.take("idle", 5) == []
    assert [a.seq for a in machine.take("idle", 5 + BACKUP_FLOOR_SECONDS + 0.01)] == [0]


def test_no_backup_timer_while_work_is_queued_or_backups_are_off() -> None:
    for backups in (True, False):
        machine = JobMachine(LIMITS, backup_tasks=backups)
        machine.begin("process")
        machine.join("w1", "A", cap=100)
        machine.split([b"0", b"1"], True)
        machine.credit("w1", 1)
        machine.take("w1", 0)
        assert machine.backup_due(0) == math.inf  # fragment 1 is still queued
        machine.credit("w1", 1)
        machine.take("w1", 0)
        assert machine.backup_due(0) == (
            pytest.approx(BACKUP_FLOOR_SECONDS) if backups else math.inf)


def test_a_copy_is_open_until_a_result_for_it_is_accepted() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("map")
    machine.join("w1", "A", cap=100)
    machine.split([b"0", b"1"], True)
    machine.credit("w1", 2)
    machine.take("w1", 0)
    assert machine.is_open("map", 0) and not machine.is_open("reduce", 0)
    assert machine.result("w1", "map", 0, b"r", 1) is Verdict.ACCEPT
    assert not machine.is_open("map", 0) and machine.is_open("map", 1)
    assert not machine.is_open("map", 2)  # never added
    machine.begin("reduce", [0])
    assert not machine.is_open("map", 1) and machine.is_open("reduce", 0)


def test_no_backups_when_switched_off_or_on_the_same_voter() -> None:
    for backup, voters in ((False, ("A", "B")), (True, ("A", "A"))):
        machine = JobMachine(LIMITS, backup_tasks=backup)
        machine.begin("process")
        machine.join("w1", voters[0], cap=100)
        machine.join("w2", voters[1], cap=100)
        machine.split([b"0"], True)
        machine.credit("w1", 1)
        machine.take("w1", 0)
        machine.credit("w2", 1)
        assert machine.take("w2", 0) == []


def test_results_that_never_agree_fail_the_job_naming_redundancy() -> None:
    machine = JobMachine(LIMITS, redundancy=2)
    machine.begin("process")
    play(machine, SCENARIOS["results that never agree fail the fragment"][1])
    with pytest.raises(JobFailed, match="no 2 of them agreed") as info:
        machine.result("w5", "process", 0, b"5", 2)
    assert info.value.rule == "redundancy"


def test_pulls_only_what_credits_and_prefetch_need() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("process")
    assert machine.wanted() == 2  # a prefetch before any worker joined
    machine.join("w1", "A", cap=100)
    machine.credit("w1", 3)
    assert machine.wanted() == 5
    machine.split([b"a", b"b"], False)
    assert machine.wanted() == 3
    machine.split([], True)
    assert machine.wanted() == 0


def test_credits_are_capped_whatever_a_worker_asks() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("process")
    machine.join("w1", "A", cap=8)
    machine.credit("w1", 4096)
    assert machine.wanted() == 8 + 2


def test_the_splitter_is_measured_here() -> None:
    machine = JobMachine(Limits(fragment_bytes=4, max_fragments=3))
    machine.begin("process")
    with pytest.raises(JobFailed, match="fragment 0 is 5 bytes") as big:
        machine.split([b"12345"], False)
    assert big.value.rule == "fragment size"
    machine.split([b"1", b"2"], False)
    with pytest.raises(JobFailed, match="more than 3 fragments") as many:
        machine.split([b"3", b"4"], False)
    assert many.value.rule == "finite splitter"


def test_phases_keep_credits_and_drop_late_answers_of_the_last_one() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("map")
    machine.join("w1", "A", cap=100)
    machine.credit("w1", 4)
    machine.split([b"k"], True)
    (a,) = machine.take("w1", 0)
    assert machine.result("w1", "map", a.seq, [b"p0", b"p1"], 1) is Verdict.ACCEPT
    assert machine.finished
    machine.begin("reduce", [0, 1])
    assert [x.seq for x in machine.take("w1", 2)] == [0, 1]  # 3 credits were left
    assert machine.result("w1", "map", 0, [b"late"], 3) is Verdict.DUPLICATE
    assert machine.result("w1", "reduce", 0, b"r0", 3) is Verdict.ACCEPT
    assert machine.counts() == {"A": 2}


def test_a_departed_workers_accepted_results_still_count() -> None:
    machine = JobMachine(LIMITS)
    machine.begin("process")
    machine.join("w1", "A", cap=100)
    machine.credit("w1", 1)
    machine.split([b"x", b"y"], True)
    machine.take("w1", 0)
    machine.result("w1", "process", 0, b"r", 1)
    machine.leave("w1")
    assert machine.counts() == {"A": 1}
    assert any("left" in line for line in machine.drain_log())


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    redundancy=st.integers(1, 3),
    ops=st.lists(st.tuples(st.sampled_from(["take", "answer", "crash", "lose", "tick", "back"]),
                           st.integers(0, 3)), max_size=120),
)
def test_every_fragment_is_accepted_exactly_once(n: int, redundancy: int, ops: list) -> None:
    """Whatever happens to workers, each fragment is accepted once, and an honest swarm
    finishes the job."""
    machine = JobMachine(LIMITS, redundancy=redundancy, max_attempts=10_000)
    machine.begin("process")
    machine.split([b"%d" % i for i in range(n)], True)
    workers = [f"w{i}" for i in range(4)]
    for w in workers:
        machine.join(w, w.upper(), cap=100)
    held: dict[str, list[int]] = {w: [] for w in workers}
    accepted: list[int] = []
    now = 0.0

    def answer(w: str, seq: int) -> None:
        if machine.result(w, "process", seq, b"same", now) is Verdict.ACCEPT:
            accepted.append(seq)

    for op, i in ops:
        w = workers[i]
        now += 1
        if op == "take":
            machine.credit(w, 2)
            held[w] += [a.seq for a in machine.take(w, now)]
        elif op == "answer" and held[w]:
            answer(w, held[w].pop(0))
        elif op == "crash" and held[w]:
            machine.failure(w, "process", held[w].pop(0), CRASH, now)
        elif op == "back" and held[w]:
            machine.giveback(w, "process", held[w].pop(0))
        elif op == "lose":
            machine.leave(w)
            held[w] = []
            machine.join(w, w.upper(), cap=100)
        elif op == "tick":
            now += 40  # past every lease
            machine.tick(now)
    # Then every worker keeps working honestly until the job is done.
    for _ in range(10 * n * redundancy + 10):
        for w in workers:
            machine.credit(w, 2)
            held[w] += [a.seq for a in machine.take(w, now)]
            while held[w]:
                answer(w, held[w].pop(0))
        if machine.finished:
            break
    assert machine.finished
    assert sorted(accepted) == list(range(n))


# --- verified results: adaptive replication and quarantine ------------------------------


def _adaptive(trust_after: int = 2, spot: float = 0.0, **kw: Any) -> JobMachine:
    from octop2p.engine._machine import Trust
    machine = JobMachine(LIMITS, trust=Trust(verify="adaptive", trust_after=trust_after,
                                             spot_share=spot, **kw))
    machine.begin("process")
    return machine


def _run_one(machine: JobMachine, answers: dict[str, bytes], now: float = 1) -> list[str]:
    """Every worker takes what it can and answers; returns who took the fragment."""
    took = []
    for worker, data in answers.items():
        machine.credit(worker, 1)
        for a in machine.take(worker, now):
            took.append(worker)
            machine.result(worker, "process", a.seq, data, now)
    return took


def test_adaptive_replicates_until_trust_is_earned_then_runs_single_copies() -> None:
    machine = _adaptive(trust_after=2)
    machine.join("a", "A", cap=100)
    machine.join("b", "B", cap=100)
    machine.split([b"%d" % i for i in range(6)], True)
    assert _run_one(machine, {"a": b"r", "b": b"r"}) == ["a", "b"]  # fragment 0, twice
    assert _run_one(machine, {"a": b"r", "b": b"r"}) == ["a", "b"]  # fragment 1, twice
    assert machine.trust is not None and machine.trust.agreed == {"A": 2, "B": 2}
    # Both are trusted now: one copy each.
    assert _run_one(machine, {"a": b"r", "b": b"r"}) == ["a", "b"]
    assert machine.table.done == 4


def test_adaptive_spot_checks_a_trusted_node() -> None:
    machine = _adaptive(trust_after=0, spot=1.0)  # trusted, but every fragment checked
    machine.join("a", "A", cap=100)
    machine.join("b", "B", cap=100)
    machine.split([b"0"], True)
    assert _run_one(machine, {"a": b"r", "b": b"r"}) == ["a", "b"]
    assert machine.finished


def test_adaptive_trusts_the_chiefs_own_node_from_the_start() -> None:
    machine = _adaptive(trusted={"CHIEF"})
    machine.join("local-0", "CHIEF", cap=100)
    machine.split([b"0"], True)
    assert _run_one(machine, {"local-0": b"r"}) == ["local-0"]
    assert machine.finished


@pytest.mark.parametrize("mode", ["redundancy", "adaptive"])
def test_a_node_that_lies_is_outvoted_and_quarantined(mode: str) -> None:
    from octop2p.engine._machine import Trust
    trust = Trust(verify="adaptive" if mode == "adaptive" else "none", trust_after=5)
    machine = JobMachine(LIMITS, redundancy=2 if mode == "redundancy" else 1, trust=trust)
    machine.begin("process")
    for w in ("liar", "h1", "h2"):
        machine.join(w, w.upper(), cap=100)
    machine.split([b"0"], True)
    _run_one(machine, {"liar": b"evil", "h1": b"good"})
    assert not machine.finished
    _run_one(machine, {"h2": b"good"})
    assert machine.finished and machine.last_accepted[1] == ["H1", "H2"]
    assert "LIAR" in trust.banned and "wrong result for process 0" in trust.banned["LIAR"]
    assert "liar" not in machine.workers  # no more work for it
    machine.join("liar2", "LIAR", cap=100)  # nor for another worker of the same node
    assert "liar2" not in machine.workers


def test_a_caught_node_whose_unchecked_results_were_merged_fails_the_job() -> None:
    machine = _adaptive(trust_after=0, spot=0.0)
    machine.join("liar", "LIAR", cap=100)
    machine.split([b"0", b"1"], False)
    _run_one(machine, {"liar": b"evil"})  # trusted: merged unchecked
    assert machine.table.done == 1
    machine.trust.spot_share = 1.0  # type: ignore[union-attr] # the next one is checked
    machine.join("h1", "H1", cap=100)
    machine.join("h2", "H2", cap=100)
    _run_one(machine, {"liar": b"evil", "h1": b"good"})
    with pytest.raises(JobFailed, match="cannot be trusted") as failed:
        _run_one(machine, {"h2": b"good"})
    assert failed.value.rule == "verify"


def test_slots_that_disagree_in_a_local_run_are_not_quarantined() -> None:
    machine = JobMachine(LIMITS, redundancy=2)  # `octop2p run`: no Trust
    machine.begin("process")
    for w in ("local-0", "local-1", "local-2"):
        machine.join(w, w, cap=100)
    machine.split([b"0"], True)
    _run_one(machine, {"local-0": b"x", "local-1": b"y"})
    _run_one(machine, {"local-2": b"x"})
    assert machine.finished and set(machine.workers) == {"local-0", "local-1", "local-2"}


def test_a_late_result_after_its_lease_ran_out_is_dropped_and_said() -> None:
    """A worker frozen past its lease (SIGSTOP, a closed lid) answers after another
    worker's copy was merged: dropped, counted for no one, and the chief's log says so."""
    machine = JobMachine(LIMITS)  # leases of 30 s
    machine.begin("process")
    machine.join("w1", "A", cap=1)
    machine.join("w2", "B", cap=1)
    machine.split([b"x"], True)
    machine.credit("w1", 1)
    assert [a.seq for a in machine.take("w1", 0)] == [0]
    assert machine.tick(31) == [("w1", 0)]
    machine.credit("w2", 1)
    assert [a.seq for a in machine.take("w2", 31)] == [0]
    assert machine.result("w2", "process", 0, b"r", 32) is Verdict.ACCEPT
    machine.drain_log()
    assert machine.result("w1", "process", 0, b"r", 40) is Verdict.DUPLICATE
    assert machine.drain_log() == [
        "worker w1's late result for fragment 0 was dropped: another copy of it was merged"]
    assert machine.result("w1", "process", 0, b"r", 41) is Verdict.DUPLICATE
    assert machine.drain_log() == []  # said once
    assert machine.counts() == {"B": 1}


def test_a_crash_after_the_lease_ran_out_costs_no_attempt() -> None:
    machine = JobMachine(LIMITS, max_attempts=1)
    machine.begin("process")
    machine.join("w1", "A", cap=1)
    machine.split([b"x"], True)
    machine.credit("w1", 1)
    machine.take("w1", 0)
    assert machine.tick(31) == [("w1", 0)]
    machine.drain_log()
    machine.failure("w1", "process", 0, CRASH, 32)  # no JobFailed: the lease had ended
    assert machine.drain_log() == [
        "process 0 on worker w1 was lost (the child was killed (memory)) after its lease "
        "ended"]
    machine.credit("w1", 1)
    assert [a.seq for a in machine.take("w1", 33)] == [0]
    assert machine.result("w1", "process", 0, b"r", 34) is Verdict.ACCEPT
