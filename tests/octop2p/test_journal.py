"""The chief's journal: records survive a crash whole or not at all, and a job resumed
from it gives the same bytes as an undisturbed run, without computing again what was
kept (docs/architecture.md, "What a crash keeps")."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octop2p.engine import _resume
from octop2p.engine._children import open_fork_server
from octop2p.engine._groups import collapse_groups
from octop2p.engine._journal import Journal, SeqSet, restore
from octop2p.engine._local import LocalPort, prepare, usable_layers
from octop2p.engine._resume import JobJournal
from octop2p.engine._runner import JobRunner
from octop2p.errors import JobFailed

# --- the log and the checkpoint ----------------------------------------------------------


def _write(folder: Path, records: list[tuple[str, int, bytes]]) -> None:
    journal = Journal(folder)
    journal.open()
    journal.meta(partitions=4)
    for kind, seq, payload in records:
        journal.result(kind, seq, payload, bytes(16), ["node-a"])
    journal.write(journal.take())
    journal.close()


def test_results_read_back_and_a_torn_tail_is_dropped(tmp_path: Path) -> None:
    records = [("process", i, f"result {i}".encode() * i) for i in range(20)]
    _write(tmp_path, records)
    log = tmp_path / "log"
    whole = log.read_bytes()
    for cut in (len(whole) - 1, len(whole) - 30, len(whole) // 2):
        log.write_bytes(whole[:cut])  # a crash in the middle of a write
        journal = Journal(tmp_path)
        recovered = journal.open()
        journal.close()
        got = recovered.results["process"]
        assert recovered.meta == {"partitions": 4}
        assert 0 < len(got) < 20
        assert all(got[s].payload == f"result {s}".encode() * s for s in got)
        assert sorted(got) == list(range(len(got)))  # a prefix, nothing invented
        assert log.stat().st_size < cut or len(got) == 19  # the torn record is cut off


def test_a_flipped_bit_ends_what_is_trusted(tmp_path: Path) -> None:
    _write(tmp_path, [("map", i, b"x" * 100) for i in range(10)])
    data = bytearray((tmp_path / "log").read_bytes())
    data[len(data) // 2] ^= 0x40
    (tmp_path / "log").write_bytes(bytes(data))
    recovered = Journal(tmp_path).open()
    assert len(recovered.results["map"]) < 10  # the damaged record and what follows go


def test_map_results_keep_their_partitions(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.open()
    journal.result("map", 3, [b"a", b"", b"ccc"], b"d" * 16, ["x", "y"])
    journal.end("map")
    journal.write(journal.take())
    recovered = Journal(tmp_path).open()
    logged = recovered.results["map"][3]
    assert logged.payload == [b"a", b"", b"ccc"] and logged.voters == ["x", "y"]
    assert recovered.ended == {"map"}


def test_checkpoint_is_restored_whole(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "count.txt").write_text("10 5\n")
    journal = Journal(tmp_path / "journal")
    journal.open()
    journal.checkpoint(b"", results, SeqSet(5))
    (results / "count.txt").write_text("999 half-writ")  # the merger, when the chief died
    (results / "junk").write_text("x")
    recovered = Journal(tmp_path / "journal").open()
    assert len(recovered.merged) == 5
    restore(recovered, results)
    assert sorted(p.name for p in results.iterdir()) == ["count.txt"]
    assert (results / "count.txt").read_text() == "10 5\n"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 200), max_size=200))
def test_seqset_holds_what_was_added(seqs: list[int]) -> None:
    merged = SeqSet()
    for s in seqs:
        merged.add(s)
    assert len(merged) == len(set(seqs))
    assert all(s in merged for s in seqs)
    assert not any(s in merged for s in set(range(201)) - set(seqs))
    again = SeqSet.from_json(merged.to_json())
    assert len(again) == len(merged) and again.low == merged.low


# --- a job resumed through the runner ----------------------------------------------------

SPLIT = """
import random
def splitter():
    for i in range(N):
        yield {fragment}
"""
PROCESS = """
import time
def process(fragment):
    time.sleep(0.01)
    return fragment[0] * fragment[0]
"""
# The merger's state lives in results_dir (docs/jobs.md): a line per merged result.
MERGE = """
def merger(result, results_dir):
    with open(results_dir / "merged.txt", "a") as f:
        f.write(f"{result}\\n")

def finalize(results_dir):
    lines = (results_dir / "merged.txt").read_text().split()
    (results_dir / "sum.txt").write_text(str(sum(map(int, lines))))
"""


def _package(folder: Path, n: int, fragment: str = "(i,)", ordered: bool = True) -> Path:
    folder.mkdir()
    (folder / "Split.py").write_text(f"N = {n}\n" + SPLIT.format(fragment=fragment))
    (folder / "Process.py").write_text(PROCESS)
    (folder / "Merge.py").write_text(MERGE)
    (folder / "job.toml").write_text(f"ordered = {str(ordered).lower()}\n")
    return folder


async def _run(spec, work: Path, *, stop_when=None, journal: bool = True):
    """Run ``spec`` with two local slots and a journal in ``work``; ``stop_when(progress)``
    ends the run abruptly (records not yet written are lost, as in a crash)."""
    jj = None
    if journal:
        log = Journal(work / "journal")
        jj = JobJournal(log, log.open())
    with collapse_groups():
        return await _run_in(spec, work, jj, stop_when)


async def _run_in(spec, work, jj, stop_when):
    async with open_fork_server() as fs:
        runner = JobRunner(spec, fs, work_dir=work / "work", layers=usable_layers(),
                           partitions=4, journal=jj)
        runner.served.append(LocalPort(2, lambda i: f"slot-{i}"))
        if stop_when is not None:
            runner.on_progress = lambda p: runner.cancel() if stop_when(p) else None
        try:
            await runner.run()
        finally:
            if jj is not None:
                jj.journal.close()
        return runner


@pytest.fixture(autouse=True)
def _quick_checkpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_resume, "CHECKPOINT_SECONDS", 0.05)
    monkeypatch.setattr(_resume, "JOURNAL_SECONDS", 0.05)


@pytest.mark.parametrize("ordered", [True, False])
async def test_package_job_resumes_to_the_same_bytes(tmp_path: Path, ordered: bool) -> None:
    n = 120
    spec = prepare(_package(tmp_path / "job", n, ordered=ordered))
    with pytest.raises(JobFailed, match="cancelled"):
        await _run(spec, tmp_path / "a", stop_when=lambda p: p.done >= 50)
    resumed = await _run(spec, tmp_path / "a")
    assert resumed.journal is not None and resumed.journal.kept >= 40
    # Kept results are not computed again: this run accepted only the others.
    assert resumed.accepted == n - resumed.journal.kept
    merged = (tmp_path / "a/work/results/merged.txt").read_text().split()
    expected = [str(i * i) for i in range(n)]
    assert (merged if ordered else sorted(merged, key=int)) == expected  # each once
    assert (tmp_path / "a/work/results/sum.txt").read_text() == str(sum(i * i for i in range(n)))


async def test_a_splitter_that_changes_is_caught_on_resume(tmp_path: Path) -> None:
    spec = prepare(_package(tmp_path / "job", 80, fragment="(random.randrange(10**9),)"))
    with pytest.raises(JobFailed, match="cancelled"):
        await _run(spec, tmp_path / "a", stop_when=lambda p: p.done >= 30)
    with pytest.raises(JobFailed, match="not deterministic") as caught:
        await _run(spec, tmp_path / "a")
    assert caught.value.rule == "deterministic splitter"


SCRIPT = """
source = {f"k{i}": " ".join(f"w{(i * j) % 37}" for j in range(200)) for i in range(60)}

def mapfn(key, value):
    for word in value.split():
        yield word, 1

def reducefn(key, values):
    import time
    time.sleep(0.05)
    return key, len(values)
"""


async def test_mapreduce_resumes_in_reduce_without_mapping_again(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    script = tmp_path / "job" / "count.py"
    script.write_text(textwrap.dedent(SCRIPT))
    spec = prepare(script)
    whole = await _run(spec, tmp_path / "whole", journal=False)
    expected = (whole.results_dir / "output.txt").read_bytes()
    with pytest.raises(JobFailed, match="cancelled"):
        await _run(spec, tmp_path / "a", stop_when=lambda p: p.phase == "reduce")
    resumed = await _run(spec, tmp_path / "a")
    assert resumed.journal is not None
    maps = len(resumed.recovered.results["map"])
    assert maps >= 1 and "map" in resumed.recovered.ended
    # Nothing of the map phase ran again: only the reduce tasks not kept.
    assert resumed.accepted == 4 - len(resumed.recovered.results.get("reduce", {}))
    assert (resumed.results_dir / "output.txt").read_bytes() == expected
    assert os.path.getsize(resumed.results_dir / "output.txt") > 0
