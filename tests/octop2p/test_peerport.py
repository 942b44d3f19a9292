"""PeerPort on in-memory links: a chief's runner with one donor played by the test.

No fork server runs: the runner's phase is begun by hand and no child is spawned, so
the port is seen alone: fragments go out signed, in one write; results are bound to
what was sent; a donor that lies, stalls or leaves loses its fragments to the queue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from octop2p.engine import _scheduler
from octop2p.engine._limits import Limits
from octop2p.engine._package import load_job
from octop2p.engine._runner import JobRunner
from octop2p.engine._scheduler import Verdict
from octop2p.engine._slot import MAX_SLOT_WINDOW
from octop2p.net._peerport import MAX_HANDED_IN_PER_CORE, STILL_RUNNING, PeerPort
from protocol import (
    Envelope,
    EnvelopeKind,
    Failure,
    Fragment,
    Hello,
    NodeIdentity,
    Result,
    content_hash,
)
from tests.octop2p.test_peer import CHIEF, DONOR, JOB, linked, receive

PACKAGE = content_hash(b"package")


def runner(tmp_path: Path, redundancy: int = 1) -> JobRunner:
    pkg = tmp_path / "job"
    pkg.mkdir()
    (pkg / "Split.py").write_text("def splitter():\n    yield 1\n")
    (pkg / "Process.py").write_text("def process(x):\n    return x\n")
    (pkg / "Merge.py").write_text("def merger(r, results_dir):\n    pass\n")
    (pkg / "job.toml").write_text(f"redundancy = {redundancy}\n")
    run = JobRunner(load_job(pkg, Limits()), None, work_dir=tmp_path,  # type: ignore[arg-type]
                    layers=frozenset())
    accepted: list[tuple[int, Any]] = []
    run._begin("process", None, lambda seq, data: accepted.append((seq, data)))
    run.accepted_list = accepted  # type: ignore[attr-defined]
    return run


def answer(donor: NodeIdentity, fragment: Fragment, payload: bytes,
           failure: Failure | None = None, seq: int | None = None) -> Result:
    env = fragment.envelope
    return Result(envelope=Envelope.sign(
        donor, EnvelopeKind.RESULT, JOB, env.seq if seq is None else seq, payload,
        ref=env.digest), failure=failure)


async def port_and_donor(run: JobRunner) -> tuple[PeerPort, Any, trio.Nursery, Any]:
    chief_link, donor_link = await linked(lockstep=False)
    chief_link.hello = Hello(name="d", software="t", cores=2, donating=True)
    return PeerPort(run, chief_link, CHIEF, JOB, PACKAGE), donor_link, None, chief_link


async def test_fragments_go_out_signed_and_results_are_merged(tmp_path: Path) -> None:
    run = runner(tmp_path)
    port, donor, _, _ = await port_and_donor(run)
    donor_id = DONOR
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        run.machine.split([b"a", b"b", b"c"], True)
        port.credit(3)
        got = await receive(donor, 3)
        assert [f.envelope.seq for f in got] == [0, 1, 2]  # type: ignore[union-attr]
        for f in got:
            f.envelope.verify(author=CHIEF.public_key, kind=EnvelopeKind.FRAGMENT,  # type: ignore[union-attr]
                              job_id=JOB)
            assert f.envelope.ref == PACKAGE  # type: ignore[union-attr]
        # Answers for another fragment's digest, or a seq never sent, are dropped.
        port.on_result(answer(donor_id, got[0], b"A", seq=7))  # type: ignore[arg-type]
        wrong = Result(envelope=Envelope.sign(donor_id, EnvelopeKind.RESULT, JOB, 1, b"B",
                                              ref=content_hash(b"other")))
        port.on_result(wrong)
        assert run.accepted_list == []  # type: ignore[attr-defined]
        for f, data in zip(got, (b"A", b"B", b"C"), strict=True):
            port.on_result(answer(donor_id, f, data))  # type: ignore[arg-type]
        assert sorted(run.accepted_list) == [(0, b"A"), (1, b"B"), (2, b"C")]  # type: ignore[attr-defined]
        assert run.machine.finished
        nursery.cancel_scope.cancel()


async def test_a_donor_that_leaves_hands_its_fragments_back(tmp_path: Path) -> None:
    run = runner(tmp_path)
    port, donor, _, chief_link = await port_and_donor(run)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        run.machine.split([b"a", b"b"], True)
        port.credit(2)
        await receive(donor, 2)
        assert run.machine.table.leased_to(port.worker) == [0, 1]
        await donor.stream.aclose()  # the donor's machine went away
        await chief_link.stream.aclose()
        port.deliver(port.worker, [])  # wake the sender: it finds the link closed
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert port.worker not in run.machine.workers
    assert run.machine.table.queued == 2
    assert run.machine.waiting() == "no worker in reach"


async def test_work_settled_before_it_is_written_is_not_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup copy assigned to the donor, whose original is accepted before the port
    writes it, never goes out, and its credit comes back to the donor."""
    monkeypatch.setattr(_scheduler, "BACKUP_FLOOR_SECONDS", 0.0)  # backups at once
    run = runner(tmp_path)
    port, donor, _, _ = await port_and_donor(run)
    machine = run.machine
    machine.split([b"a", b"b"], True)
    machine.join("other", "O", 4)
    machine.credit("other", 1)
    assert [a.seq for a in machine.take("other", 0)] == [0]
    port.credit(2)  # fragment 1, then a backup copy of 0 (in two dispatch rounds)
    port.credit(0)
    assert machine.table.leased_to(port.worker) == [0, 1]
    assert machine.result("other", "process", 0, b"A", 1.0) is Verdict.ACCEPT
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        got = await receive(donor, 1)
        assert [f.envelope.seq for f in got] == [1]  # type: ignore[union-attr]
        with trio.move_on_after(0.3):
            extra = await receive(donor, 1)
            raise AssertionError(f"sent a settled fragment: {extra}")
        assert machine.workers[port.worker].credits == 1
        nursery.cancel_scope.cancel()


async def test_a_donor_claiming_many_cores_gets_bounded_credits(tmp_path: Path) -> None:
    run = runner(tmp_path)
    chief_link, _donor = await linked(lockstep=False)
    chief_link.hello = Hello(name="d", software="t", cores=4096, donating=True)
    port = PeerPort(run, chief_link, CHIEF, JOB, PACKAGE)
    port.credit(10**9)
    assert run.machine.workers[port.worker].credits <= 64 * MAX_SLOT_WINDOW


@pytest.mark.parametrize("traceback", ["", "Traceback: ValueError"])
async def test_failures_from_a_donor(tmp_path: Path, traceback: str) -> None:
    """A crash (no traceback) is retried; the job's own error fails the job."""
    run = runner(tmp_path)
    port, donor, _, _ = await port_and_donor(run)
    donor_id = DONOR
    failed: list[BaseException] = []
    run.fail = failed.append  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        run.machine.split([b"a"], True)
        port.credit(1)
        (f,) = await receive(donor, 1)
        port.on_result(answer(donor_id, f, b"", Failure(  # type: ignore[arg-type]
            message="boom", rule="memory" if not traceback else None, traceback=traceback)))
        nursery.cancel_scope.cancel()
    if traceback:
        assert len(failed) == 1 and "boom" in str(failed[0])
    else:
        assert failed == [] and run.machine.table.queued == 1


async def test_a_late_map_answer_is_not_taken_for_the_reduce_task_of_its_number(
        tmp_path: Path) -> None:
    """Backup tasks make late answers common: a map result that arrives once the job
    has moved on to reduce is dropped, never merged as reduce task 0."""
    run = runner(tmp_path)
    port, donor, _, _ = await port_and_donor(run)
    reduced: list[tuple[int, Any]] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        run.machine.begin("map")
        run.machine.split([b"k"], True)
        port.credit(1)
        (map_task,) = await receive(donor, 1)
        # Another worker finished the map phase meanwhile; reduce begins, and the late
        # map answer comes in before any reduce task went to this donor.
        run._begin("reduce", [0, 1], lambda seq, data: reduced.append((seq, data)))
        port.on_result(answer(DONOR, map_task, b"late map output"))  # type: ignore[arg-type]
        assert reduced == []
        port.credit(2)
        got = await receive(donor, 2)
        for f in got:
            port.on_result(answer(DONOR, f, b"r%d" % f.envelope.seq))  # type: ignore[arg-type,union-attr]
        assert sorted(reduced) == [(0, b"r0"), (1, b"r1")]
        nursery.cancel_scope.cancel()


def test_a_donor_signs_each_answer_for_the_fragment_it_answers() -> None:
    """A donor holding map task 0 when reduce task 0 arrives (backup tasks make that
    common) must bind each answer to its own fragment: it signed the map output for the
    reduce task, which the chief then merged as reduce 0 (`final` failed to unpickle it),
    and the real reduce answer went out with no reference at all."""
    from types import SimpleNamespace

    from octop2p.engine._limits import JobOptions
    from octop2p.net._workerjob import WorkerJob
    from protocol import JobInfo, JobKind, Task

    node = SimpleNamespace(cores=1, limits=Limits(), identity=DONOR)
    info = JobInfo(job_id=JOB, name="wc", kind=JobKind.SCRIPT, script="wc.py",
                   package=PACKAGE, package_size=1, submitter=CHIEF.public_key,
                   package_signature=bytes(64), options=JobOptions(name="wc").to_dict())
    link = SimpleNamespace(peer_id="CHIEF")
    job = WorkerJob(SimpleNamespace(node=node), link, info)  # type: ignore[arg-type]

    def fragment(task: Task, payload: bytes) -> Fragment:
        return Fragment(task=task, envelope=Envelope.sign(
            CHIEF, EnvelopeKind.FRAGMENT, JOB, 0, payload, ref=PACKAGE))

    map0 = fragment(Task.MAP, b"source keys")
    reduce0 = fragment(Task.REDUCE, b"\x90")  # an empty msgpack list of partitions
    assert job.take(map0) == "" and job.take(reduce0) == ""
    assert job.signed("map", 0, b"m").envelope.ref == map0.envelope.digest
    assert job.signed("reduce", 0, b"r").envelope.ref == reduce0.envelope.digest


def handed_in(seq: int, fragment: bytes, payload: bytes = b"",
              failure: Failure | None = None) -> Result:
    """What a donor hands in after the chief restarted: an answer to the fragment the
    chief's earlier run signed (never sent on this link)."""
    ran = Envelope.sign(CHIEF, EnvelopeKind.FRAGMENT, JOB, seq, fragment, ref=PACKAGE)
    return Result(envelope=Envelope.sign(DONOR, EnvelopeKind.RESULT, JOB, seq, payload,
                                         ref=ran.digest), failure=failure)


async def test_a_donor_hands_in_results_from_before_the_chief_restarted(
        tmp_path: Path) -> None:
    run = runner(tmp_path)
    port, donor, _, _ = await port_and_donor(run)
    run.machine.split([b"a", b"b", b"c", b"d"], True)
    port.on_result(handed_in(0, b"a", b"A"))  # the fragment this run has: merged
    port.on_result(handed_in(1, b"not b", b"B"))  # another fragment: refused
    port.on_result(handed_in(2, b"c", failure=Failure(message="running",
                                                      rule=STILL_RUNNING)))
    port.on_result(handed_in(0, b"a", b"A"))  # again: never merged twice
    assert run.accepted_list == [(0, b"A")]  # type: ignore[attr-defined]
    assert run.machine.table.leased_to(port.worker) == [2]  # still running there
    async with trio.open_nursery() as nursery:
        nursery.start_soon(port.serve)
        port.credit(4)
        got = await receive(donor, 2)
        assert [f.envelope.seq for f in got] == [1, 3]  # type: ignore[union-attr]
        port.on_result(handed_in(2, b"c", b"C"))  # the running fragment's result
        assert run.accepted_list == [(0, b"A"), (2, b"C")]  # type: ignore[attr-defined]
        nursery.cancel_scope.cancel()
    assert run.handover.counts == {"result": 2, "running": 1, "mismatch": 1, "done": 1}


async def test_a_donor_cannot_hand_in_without_bound(tmp_path: Path) -> None:
    run = runner(tmp_path)
    port, _, _, _ = await port_and_donor(run)  # 2 cores
    run.machine.split([b"a"], False)
    room = 2 * MAX_HANDED_IN_PER_CORE
    for seq in range(room + 50):  # fragments the splitter has not produced (yet)
        port.on_result(handed_in(seq + 10, b"x", b"X" * 100))
    other = Result(envelope=Envelope.sign(DONOR, EnvelopeKind.RESULT, content_hash(b"j")[:16],
                                          0, b"A", ref=content_hash(b"a")))
    port.on_result(other)  # another job's: dropped
    assert sum(run.handover.counts.values()) + len(run.handover._pending) == room
    assert run.accepted_list == []  # type: ignore[attr-defined]
