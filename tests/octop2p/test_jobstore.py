"""The job store read back and written (net/_jobstore.py, net/_store.py): every damaged
record is listed as such with its results, results are checked before they go out,
and a failed write leaves the old file and no temporary."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from octop2p.net._jobstore import JobStore, damage_of
from octop2p.net._store import StoreError, write_atomic
from protocol import JobState, content_hash

JOB = "5e" * 16


def _tarball() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("count.txt")
        info.size = 7
        tar.addfile(info, io.BytesIO(b"664579\n"))
    return buf.getvalue()


def _journal(**changes: Any) -> dict[str, Any]:
    journal = {
        "job": JOB, "name": "primes", "kind": "package", "script": None, "options": {},
        "package": "00" * 32, "submitter": "00" * 32, "state": "done", "started": 1.0,
        "finished": 2.0, "phase": "merge", "done": 100, "total": 100,
        "workers": {"AAAA": 100}, "error": "", "rule": None, "traceback": "",
        "output": "", "results_hash": content_hash(_tarball()).hex(),
    }
    return journal | changes


def _folder(tmp_path: Path, journal: Any, results: bytes | None = None) -> Path:
    folder = tmp_path / JOB
    folder.mkdir()
    text = journal if isinstance(journal, str) else json.dumps(journal)
    (folder / "job.json").write_text(text)
    (folder / "results.tar.gz").write_bytes(_tarball() if results is None else results)
    return folder


def test_a_whole_record_reads_back_with_its_checked_results(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _journal())
    archived = JobStore.load(folder)
    assert archived is not None and archived.damage is None and damage_of(folder) is None
    assert archived.record.state is JobState.DONE
    assert archived.record.read_results() == _tarball()


@pytest.mark.parametrize("journal", [
    "{\"job\": ", "[1, 2]", _journal(name=5), _journal(state="sleeping"),
    _journal(started="yesterday"), _journal(done="100"), _journal(done=True),
    _journal(total=[1]), _journal(workers="AAAA"), _journal(workers={"AAAA": "all"}),
    _journal(output=7), _journal(results_hash=5), _journal(results_hash="zz"),
    _journal(job="ab" * 16),
])
def test_a_damaged_record_is_listed_with_its_results(tmp_path: Path, journal: Any) -> None:
    folder = _folder(tmp_path, journal)
    archived = JobStore.load(folder)
    assert archived is not None and archived.damage
    assert archived.damage == damage_of(folder)
    assert archived.record.id_hex == JOB
    assert archived.record.state is JobState.DONE
    assert archived.record.error.startswith("damaged record (")
    assert "\n" not in archived.record.error
    assert archived.record.read_results() == _tarball()  # whole: checked as gzip


@pytest.mark.parametrize("cut", [lambda b: b[:-9], lambda b: b[:10] + b"\0" * 40 + b[50:]])
def test_damaged_results_are_refused(tmp_path: Path, cut: Any) -> None:
    for journal in (_journal(), "not json"):
        folder = _folder(tmp_path, journal, cut(_tarball()))
        archived = JobStore.load(folder)
        assert archived is not None
        with pytest.raises(StoreError, match="damaged on disk"):
            archived.record.read_results()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def test_a_damaged_record_without_results_is_failed(tmp_path: Path) -> None:
    folder = tmp_path / JOB
    folder.mkdir()
    archived = JobStore.load(folder)  # no job.json at all
    assert archived is not None and archived.record.state is JobState.FAILED
    assert "job.json cannot be read" in archived.record.error
    assert JobStore.load(tmp_path / "not-a-job") is None


def test_an_interrupted_job_loses_its_scratch_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _journal(state="running", results_hash=None))
    (folder / "work" / "deep").mkdir(parents=True)
    assert damage_of(folder) is None and (folder / "work").is_dir()  # doctor only reads
    archived = JobStore.load(folder)
    assert archived is not None and archived.record.state is JobState.FAILED
    assert archived.record.error.startswith("interrupted")
    assert not (folder / "work").exists()
    assert not archived.record.has_results


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    write_atomic(target, b"old")
    blocker = tmp_path / "results.tar.gz"
    (blocker / "inside").mkdir(parents=True)  # a folder in the way: the rename fails
    with pytest.raises(StoreError, match="could not write"):
        write_atomic(blocker, gzip.compress(b"x"))
    with pytest.raises(StoreError):
        write_atomic(tmp_path / "gone" / "job.json", b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "results.tar.gz"]


def test_damaged_results_of_a_damaged_record_are_offered_to_no_one(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "not json", _tarball()[:-9])
    archived = JobStore.load(folder)
    assert archived is not None
    # A member asking for its status (or a chunk) gets no hash to fetch by.
    assert archived.results_hash is None and not archived.record.has_results
    assert "damaged on disk" in archived.record.error


# --- job.json as the job runs: off the event loop, one write at a time -------------------


def _running_job(examples: Path) -> Any:
    """A real NetworkJob of the primes example; its node is a stand-in (the job only
    signs its package with it until it runs)."""
    from types import SimpleNamespace

    from octop2p.engine._limits import Limits
    from octop2p.engine._package import load_job
    from octop2p.engine._runner import Progress
    from octop2p.net._hosted import NetworkJob
    from protocol import NodeIdentity

    node = SimpleNamespace(identity=NodeIdentity.generate())
    job = NetworkJob(node, load_job(examples / "primes", Limits()))  # type: ignore[arg-type]
    job.record.state = JobState.RUNNING
    job.record.progress = Progress(phase="process", done=0, total=100)
    return job


class _SlowDisk:
    """``write_atomic`` as a slow disk: records which thread wrote what, and how many
    writes of one file ran at once."""

    def __init__(self, seconds: float) -> None:
        import threading

        self.seconds = seconds
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.written: list[int] = []  # "done" of each job.json written, in order
        self.threads: set[int] = set()

    def __call__(self, path: Path, data: bytes) -> None:
        import threading
        import time

        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(self.seconds)
        write_atomic(path, data)
        with self.lock:
            self.running -= 1
            self.written.append(json.loads(data)["done"])
            self.threads.add(threading.get_ident())


async def test_progress_rewrites_job_json_in_a_thread_one_write_at_a_time(
    tmp_path: Path, examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    import trio

    from octop2p.net import _jobstore

    job = _running_job(examples)
    store = JobStore(tmp_path / job.record.id_hex)
    disk = _SlowDisk(0.05)
    monkeypatch.setattr(_jobstore, "write_atomic", disk)
    longest = 0.0
    async with trio.open_nursery() as nursery:
        for done in range(1, 41):
            job.record.progress.done = done
            began = time.perf_counter()
            store.journal_soon(job, nursery)
            longest = max(longest, time.perf_counter() - began)
            await trio.sleep(0.005)
    # The event loop never waited for the disk, and the disk saw one write at a time,
    # in order, ending with the newest state; states queued behind a write were skipped.
    assert longest < 0.04, longest
    assert threading.get_ident() not in disk.threads
    assert disk.most == 1
    assert disk.written == sorted(disk.written) and disk.written[-1] == 40
    assert 2 <= len(disk.written) < 20, disk.written
    job.record.state, job.record.progress.done = JobState.DONE, 100
    async with trio.open_nursery() as nursery:
        store.journal_soon(job, nursery)  # in flight when the job ends...
        await trio.sleep(0.01)
        await store.write_journal(job)  # ...so the last write waits for it, then wins
    assert disk.most == 1 and disk.written[-1] == 100
    assert json.loads((store.folder / "job.json").read_bytes())["state"] == "done"


async def test_a_full_disk_under_job_json_is_logged_once_and_never_raised(
    tmp_path: Path, examples: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import trio

    from octop2p.net import _jobstore

    job = _running_job(examples)
    store = JobStore(tmp_path / job.record.id_hex)
    full = True

    def disk(path: Path, data: bytes) -> None:
        if full:
            raise StoreError(f"could not write {path}: No space left on device")
        write_atomic(path, data)

    monkeypatch.setattr(_jobstore, "write_atomic", disk)
    with caplog.at_level("WARNING", logger="octop2p.net._jobstore"):
        for _ in range(3):
            async with trio.open_nursery() as nursery:
                store.journal_soon(job, nursery)
            await store.write_journal(job)
        assert [r.getMessage().count("No space left") for r in caplog.records] == [1]
        full = False  # space again: the next write goes through...
        await store.write_journal(job)
        assert json.loads((store.folder / "job.json").read_bytes())["job"] == job.record.id_hex
        full = True  # ...and a new failure is told again
        await store.write_journal(job)
    assert len(caplog.records) == 2
