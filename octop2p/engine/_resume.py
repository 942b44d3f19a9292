"""The runner's side of a job's journal (:mod:`._journal`): what it writes as the job
runs, when, and what it takes back from an earlier run of the chief.

Records go to memory on the event loop and to disk from a thread, at most once a
second (sooner when many bytes wait), one writer at a time. The merger's results_dir is
copied between two merge calls, never more often than keeps the copies' cost near 5%
of the merge. A journal that cannot be written fails the job with a clear message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import trio

from octop2p.engine._journal import Journal, Logged, Recovered, SeqSet, check_split, digest
from octop2p.errors import JobFailed

#: How often, at most, the journal's new records are written (with fsync), and the
#: pending bytes that make it write at once.
JOURNAL_SECONDS = 1.0
JOURNAL_BATCH_BYTES = 8 << 20
#: The merger's results_dir is copied into the journal at most this often, and never
#: more than once per CHECKPOINT_SHARE times the last copy took (a checkpoint that
#: takes 0.1 s comes at most every 2 s: its cost stays under 5% of the merge).
CHECKPOINT_SECONDS = 2.0
CHECKPOINT_SHARE = 20.0


class JobJournal:
    """A running job's journal (see the module docstring)."""

    def __init__(self, journal: Journal, recovered: Recovered) -> None:
        self.journal = journal
        self.recovered = recovered
        self.merged = SeqSet()  # fragments merged into results_dir (package jobs)
        self._lock = trio.Lock()
        self._full = trio.Event()
        self._checkpoint_at = 0.0

    @property
    def kept(self) -> int:
        """Results an earlier run of the chief left, not computed again."""
        return self.recovered.kept()

    # --- as the job runs -------------------------------------------------------------------

    def accepted(self, kind: str, seq: int, payload: bytes | list[bytes], content: bytes,
                 voters: list[str]) -> None:
        self.journal.result(kind, seq, payload, content, voters)
        if self.journal.pending > JOURNAL_BATCH_BYTES:
            self._full.set()

    def split(self, kind: str, first: int, fragments: list[bytes], where: str) -> None:
        """Fragments from the splitter: checked against those of an earlier run of the
        chief (JobFailed when they differ), and the new ones' digests journaled."""
        digests = [digest(f) for f in fragments]
        check_split(self.recovered, kind, first, digests, where)
        skip = max(0, len(self.recovered.splits.get(kind, ())) - first)
        if skip < len(digests):
            self.journal.split(kind, first + skip, digests[skip:])

    def resumed(self, kind: str,
                on_accepted: Callable[[str, int, bytes, list[str]], None]) -> dict[int, Logged]:
        """The results of phase ``kind`` kept from an earlier run; each is reported to
        ``on_accepted`` again (they are part of the job's provenance)."""
        logged = self.recovered.results.get(kind, {})
        for seq in sorted(logged):
            on_accepted(kind, seq, logged[seq].digest, logged[seq].voters)
        return logged

    async def end_phase(self, kind: str) -> None:
        """Every result of ``kind`` is in, and on disk before the next phase starts."""
        self.journal.end(kind)
        await self.flush()

    # --- writing ---------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the journal's new records now (with fsync, in a thread)."""
        async with self._lock:
            data = self.journal.take()
            if data:
                try:
                    await trio.to_thread.run_sync(self.journal.write, data)
                except OSError as exc:
                    raise _failed(exc) from None

    async def writer(self, fail: Callable[[BaseException], None]) -> None:
        """Write new records every JOURNAL_SECONDS, or as soon as many bytes wait."""
        self._checkpoint_at = time.monotonic() + CHECKPOINT_SECONDS
        while True:
            with trio.move_on_after(JOURNAL_SECONDS):
                await self._full.wait()
            self._full = trio.Event()
            try:
                await self.flush()
            except JobFailed as exc:
                fail(exc)
                return

    async def merged_batch(self, seqs: list[int], results_dir: Path) -> None:
        """``seqs`` were merged; copy results_dir into the journal when one is due (the
        merger is idle between two calls)."""
        for seq in seqs:
            self.merged.add(seq)
        if time.monotonic() < self._checkpoint_at:
            return
        async with self._lock:
            started = time.monotonic()
            try:
                await trio.to_thread.run_sync(
                    self.journal.checkpoint, self.journal.take(), results_dir, self.merged)
            except OSError as exc:
                raise _failed(exc) from None
            took = time.monotonic() - started
        self._checkpoint_at = time.monotonic() + max(CHECKPOINT_SECONDS, CHECKPOINT_SHARE * took)


def _failed(exc: OSError) -> JobFailed:
    return JobFailed(message=f"the chief could not write this job's journal: "
                     f"{exc.strerror or exc}; free some disk space and submit it again",
                     rule="disk")
