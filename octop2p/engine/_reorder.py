"""The chief's causal-order buffer: results wait here until every earlier one is merged.

Result 4 is held until 1, 2 and 3 have been handed to the merger (the Butcher guide's
causal order). With ``ordered = false`` results leave in arrival order instead. The
buffer keeps at most ``memory_bytes`` of results in memory; beyond that it appends the
newest to a spill file and reads them back when their turn comes, so a slow early
fragment cannot make the chief run out of memory.
"""

from __future__ import annotations

import os
import tempfile
from collections import deque
from pathlib import Path


class CausalBuffer:
    """Holds opaque result bytes by sequence number and releases them in order."""

    def __init__(
        self,
        *,
        ordered: bool = True,
        memory_bytes: int = 64 << 20,
        spill_dir: Path | None = None,
    ) -> None:
        self.ordered = ordered
        self.memory_bytes = memory_bytes
        self._spill_dir = spill_dir
        self._cursor = 0  # next sequence number to release (ordered mode)
        self._mem: dict[int, bytes] = {}
        self._spilled: dict[int, tuple[int, int]] = {}  # seq -> (offset, length)
        self._arrivals: deque[int] = deque()  # unordered mode: release order
        self._mem_bytes = 0
        self._spill_file: int | None = None
        self._spill_path: str | None = None
        self._spill_end = 0

    def __len__(self) -> int:
        return len(self._mem) + len(self._spilled)

    @property
    def cursor(self) -> int:
        """In ordered mode, the sequence number the merger waits for next."""
        return self._cursor

    @property
    def memory_used(self) -> int:
        """Bytes of results held in memory now."""
        return self._mem_bytes

    @property
    def spilled(self) -> int:
        """Results that sit in the spill file now."""
        return len(self._spilled)

    def add(self, seq: int, data: bytes) -> None:
        """Hold the result of fragment ``seq``; a second copy of one seq is an error."""
        if seq in self._mem or seq in self._spilled or (self.ordered and seq < self._cursor):
            raise ValueError(f"result {seq} was already added")
        self._mem[seq] = data
        self._mem_bytes += len(data)
        if not self.ordered:
            self._arrivals.append(seq)
        if self._mem_bytes > self.memory_bytes:
            self._spill()

    def pop_ready(
        self, max_items: int = 1 << 30, max_bytes: int = 16 << 20
    ) -> list[tuple[int, bytes]]:
        """Results whose turn has come, in merge order, up to the given bounds."""
        out: list[tuple[int, bytes]] = []
        size = 0
        while len(out) < max_items and (not out or size < max_bytes):
            if self.ordered:
                seq = self._cursor
                if seq not in self._mem and seq not in self._spilled:
                    break
                self._cursor += 1
            else:
                if not self._arrivals:
                    break
                seq = self._arrivals.popleft()
            data = self._take(seq)
            out.append((seq, data))
            size += len(data)
        if not self._spilled and self._spill_file is not None:
            self._reset_spill()
        return out

    def skip_to(self, seq: int) -> None:
        """Resume: results before ``seq`` were merged in an earlier run of the chief."""
        self._cursor = max(self._cursor, seq)

    def close(self) -> None:
        """Drop the spill file."""
        if self._spill_file is not None:
            os.close(self._spill_file)
            self._spill_file = None
        if self._spill_path is not None:
            try:
                os.unlink(self._spill_path)
            except FileNotFoundError:
                pass
            self._spill_path = None

    # --- spilling ----------------------------------------------------------------------

    def _take(self, seq: int) -> bytes:
        data = self._mem.pop(seq, None)
        if data is not None:
            self._mem_bytes -= len(data)
            return data
        offset, length = self._spilled.pop(seq)
        assert self._spill_file is not None
        return os.pread(self._spill_file, length, offset)

    def _spill(self) -> None:
        """Move the results needed last to disk until memory is under half the limit."""
        if self._spill_file is None:
            fd, path = tempfile.mkstemp(prefix="octop2p-spill-", dir=self._spill_dir)
            self._spill_file, self._spill_path = fd, path
        if self.ordered:
            victims = sorted(self._mem, reverse=True)
        else:
            victims = list(reversed(self._arrivals))
        for seq in victims:
            if self._mem_bytes <= self.memory_bytes // 2:
                break
            if self.ordered and seq == self._cursor:
                continue  # about to be released anyway
            data = self._mem.pop(seq, None)
            if data is None:
                continue
            os.pwrite(self._spill_file, data, self._spill_end)
            self._spilled[seq] = (self._spill_end, len(data))
            self._spill_end += len(data)
            self._mem_bytes -= len(data)

    def _reset_spill(self) -> None:
        assert self._spill_file is not None
        os.ftruncate(self._spill_file, 0)
        self._spill_end = 0
