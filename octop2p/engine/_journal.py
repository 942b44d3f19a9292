"""A job's journal on the chief's disk: what a restarted chief needs to resume the job.

The folder holds two things (docs/architecture.md, "What a crash keeps"):

- ``log``: an append-only file of records, each framed and checksummed, so that a
  record cut short by a crash is found and dropped, never misread. Records are:

  - ``meta``: the job's facts that must not change on resume (its partitions);
  - ``split``: the content digests of fragments the splitter (or a script's source)
    produced, so a re-run splitter can be checked against them;
  - ``result``: one accepted result (its phase, fragment, bytes, content digest and the
    voters that agreed on it), kept until the job ends;
  - ``end``: a phase finished (every one of its results is in the log before it).

  Records are buffered in memory and written by :meth:`Journal.write` (with fsync) from a
  thread, about once a second: a crash loses at most the last second of results, which
  the workers compute again.
- ``checkpoint-N/``: a copy of the merger's ``results_dir`` together with the set of
  fragments merged into it, named by ``state.json`` (replaced atomically). On resume the
  copy is restored and merging goes on from there, so each result is merged exactly once
  into what the job returns.

Pure I/O of files: no trio. The runner calls the blocking methods from a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from octop2p.engine._results import sync_folder, sync_tree, write_synced
from octop2p.errors import JobFailed

_MAGIC = b"o2pJ"
_HEADER = struct.Struct(">4sBBQI")  # magic, type, phase, seq, payload length
_CRC = struct.Struct(">I")
_META, _SPLIT, _RESULT, _END = 1, 2, 3, 4
_PHASES = ("process", "map", "reduce")
_PHASE_NO = {phase: i for i, phase in enumerate(_PHASES)}
_LENGTHS_OF_ONE = struct.Struct(">I")
_ONE_PART = (1).to_bytes(4, "big")
#: A result record's parts (a map result is one per partition) are at most this many.
MAX_PARTS = 1 << 16
STATE = "state.json"


def digest(data: bytes) -> bytes:
    """A fragment's content digest (what a re-run splitter is checked against)."""
    return hashlib.blake2b(data, digest_size=16).digest()


class JsonLists:
    """Lists of strings as JSON, each distinct list encoded once: a job's results are
    agreed on by a few voters, the same ones over and over."""

    MAX = 1024  # distinct lists kept, at most

    def __init__(self, separators: tuple[str, str] = (", ", ": ")) -> None:
        self._separators = separators
        self._known: dict[tuple[str, ...], str] = {}

    def encode(self, items: list[str]) -> str:
        key = tuple(items)
        text = self._known.get(key)
        if text is None:
            if len(self._known) >= self.MAX:
                self._known.clear()
            text = self._known[key] = json.dumps(items, separators=self._separators)
        return text


class SeqSet:
    """Sequence numbers merged so far: everything below ``low``, and a set above it."""

    def __init__(self, low: int = 0, above: set[int] | None = None) -> None:
        self.low = low
        self.above: set[int] = set(above or ())
        self._compact()

    def add(self, seq: int) -> None:
        if seq >= self.low:
            self.above.add(seq)
            self._compact()

    def __contains__(self, seq: object) -> bool:
        return isinstance(seq, int) and (seq < self.low or seq in self.above)

    def __len__(self) -> int:
        return self.low + len(self.above)

    def _compact(self) -> None:
        while self.low in self.above:
            self.above.discard(self.low)
            self.low += 1

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "above": sorted(self.above)}

    @classmethod
    def from_json(cls, data: Any) -> SeqSet:
        if not isinstance(data, dict) or type(data.get("low")) is not int:
            raise ValueError("merged set is not {low, above}")
        above = data.get("above", [])
        if not isinstance(above, list) or not all(type(s) is int for s in above):
            raise ValueError("merged set's 'above' is not a list of numbers")
        return cls(data["low"], set(above))


@dataclass
class Logged:
    """One accepted result read back from the log."""

    payload: bytes | list[bytes]
    digest: bytes
    voters: list[str]


@dataclass
class Recovered:
    """What an earlier run of the chief left of a job (empty for a new job)."""

    meta: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, list[bytes]] = field(default_factory=dict)  # phase -> digests
    results: dict[str, dict[int, Logged]] = field(default_factory=dict)  # phase -> seq
    ended: set[str] = field(default_factory=set)  # phases that finished
    checkpoint: Path | None = None  # the copy of results_dir to restore
    merged: SeqSet = field(default_factory=SeqSet)  # fragments merged into that copy

    @property
    def empty(self) -> bool:
        return not (self.meta or self.splits or self.results or self.checkpoint)

    def kept(self) -> int:
        """Results an earlier run left that this one need not compute again."""
        return sum(len(r) for r in self.results.values())


class Journal:
    """One job's journal folder (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log_path = folder / "log"
        self._pending = bytearray()
        self._voters = JsonLists()
        self._fd: int | None = None
        self._checkpoint_no = 0
        self.written = 0  # bytes written to the log by this run

    # --- reading back (blocking) -----------------------------------------------------------

    def open(self) -> Recovered:
        """Read what an earlier run left, drop a torn tail, and open the log to append."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        recovered = Recovered()
        good = _read_log(self.log_path, recovered) if self.log_path.exists() else 0
        state = _read_state(self.folder)
        if state is not None:
            self._checkpoint_no = state[0]
            recovered.checkpoint = self.folder / f"checkpoint-{state[0]}"
            recovered.merged = state[1]
        for stale in self.folder.glob("checkpoint-*"):
            if stale != recovered.checkpoint:
                shutil.rmtree(stale, ignore_errors=True)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.ftruncate(self._fd, good)  # a record cut short by the crash goes
        os.lseek(self._fd, good, os.SEEK_SET)
        return recovered

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # --- records (on the event loop: they only append to memory) ---------------------------

    def meta(self, **facts: Any) -> None:
        self._record(_META, 0, 0, json.dumps(facts).encode())

    def split(self, phase: str, first: int, digests: list[bytes]) -> None:
        self._record(_SPLIT, _PHASES.index(phase), first, b"".join(digests))

    def result(self, phase: str, seq: int, payload: bytes | list[bytes], content: bytes,
               voters: list[str]) -> None:
        """One accepted result (on the event loop, for every result: kept lean)."""
        is_list = isinstance(payload, list)
        # What json.dumps([content.hex(), voters, is_list]) writes, voters encoded once.
        head = (f'["{content.hex()}", {self._voters.encode(voters)}, '
                f'{"true" if is_list else "false"}]').encode()
        body: list[bytes]
        if isinstance(payload, list):
            body = [len(head).to_bytes(4, "big"), head, len(payload).to_bytes(4, "big")]
            for part in payload:
                body.append(len(part).to_bytes(8, "big"))
                body.append(part)
        else:
            body = [_LENGTHS_OF_ONE.pack(len(head)) + head + _ONE_PART
                    + len(payload).to_bytes(8, "big"), payload]
        self._record_parts(_RESULT, _PHASE_NO[phase], seq, body)

    def end(self, phase: str) -> None:
        self._record(_END, _PHASES.index(phase), 0, b"")

    @property
    def pending(self) -> int:
        """Bytes of records not yet written."""
        return len(self._pending)

    def take(self) -> bytes:
        """The records not yet written (hand them to :meth:`write` in a thread)."""
        data, self._pending = bytes(self._pending), bytearray()
        return data

    def _record(self, kind: int, phase: int, seq: int, payload: bytes) -> None:
        self._record_parts(kind, phase, seq, [payload])

    def _record_parts(self, kind: int, phase: int, seq: int, parts: list[bytes]) -> None:
        """One record whose payload is ``parts`` joined (appended, never joined first)."""
        header = _HEADER.pack(_MAGIC, kind, phase, seq, sum(map(len, parts)))
        pending = self._pending
        pending += header
        crc = zlib.crc32(header)
        for part in parts:
            pending += part
            crc = zlib.crc32(part, crc)
        pending += _CRC.pack(crc)

    # --- writing (blocking: from a thread) -------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append ``data`` (from :meth:`take`) to the log and make it durable."""
        if not data or self._fd is None:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.written += len(data)

    def checkpoint(self, data: bytes, results_dir: Path, merged: SeqSet) -> None:
        """Write ``data`` (pending records: every merged result is then in the log), then
        copy ``results_dir`` and name the copy, with ``merged``, in ``state.json``."""
        self.write(data)
        number = self._checkpoint_no + 1
        target = self.folder / f"checkpoint-{number}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(results_dir, target / "results", symlinks=True)
        sync_tree(target)
        state = {"checkpoint": number, "merged": merged.to_json()}
        _write_atomic(self.folder / STATE, json.dumps(state).encode())
        old = self.folder / f"checkpoint-{self._checkpoint_no}"
        self._checkpoint_no = number
        shutil.rmtree(old, ignore_errors=True)

    def remove(self) -> None:
        """The job ended: nothing to resume."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def restore(recovered: Recovered, results_dir: Path) -> None:
    """Put ``results_dir`` back as the checkpoint has it (empty without one): a folder
    made anew, so that nothing a dead merger wrote after the checkpoint stays."""
    shutil.rmtree(results_dir, ignore_errors=True)
    if recovered.checkpoint is not None:
        shutil.copytree(recovered.checkpoint / "results", results_dir, symlinks=True)
    else:
        results_dir.mkdir(parents=True)


def check_split(recovered: Recovered, phase: str, first: int, digests: list[bytes],
                where: str) -> None:
    """Fragments re-produced on resume must be those produced before the crash."""
    before = recovered.splits.get(phase, [])
    for i, d in enumerate(digests[: max(0, len(before) - first)]):
        if before[first + i] != d:
            raise JobFailed(
                message=f"the {where} is not deterministic: after the chief restarted, it "
                f"produced a different fragment {first + i} than before, so results kept "
                "from before the restart cannot be merged with new ones; make it produce "
                "the same fragments every run (see docs/jobs.md, \"When the chief "
                "restarts\"), or cancel the job and submit it again",
                rule="deterministic splitter")


# --- the log's format ----------------------------------------------------------------------


def _read_log(path: Path, out: Recovered) -> int:
    """Fill ``out`` from the log; returns the length of its whole records."""
    good = 0
    with open(path, "rb") as f:
        while True:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return good
            magic, kind, phase_no, seq, length = _HEADER.unpack(header)
            if magic != _MAGIC or phase_no >= len(_PHASES):
                return good
            payload = f.read(length)
            crc = f.read(_CRC.size)
            if len(payload) < length or len(crc) < _CRC.size:
                return good
            if _CRC.unpack(crc)[0] != zlib.crc32(payload, zlib.crc32(header)):
                return good
            try:
                _apply(out, kind, _PHASES[phase_no], seq, payload)
            except (ValueError, TypeError, IndexError):
                return good  # a record that does not parse ends what can be trusted
            good = f.tell()


def _apply(out: Recovered, kind: int, phase: str, seq: int, payload: bytes) -> None:
    if kind == _META:
        facts = json.loads(payload)
        if not isinstance(facts, dict):
            raise ValueError("meta is not an object")
        out.meta.update(facts)
    elif kind == _SPLIT:
        digests = out.splits.setdefault(phase, [])
        if seq != len(digests) or len(payload) % 16:
            raise ValueError("split digests out of order")
        digests.extend(payload[i : i + 16] for i in range(0, len(payload), 16))
    elif kind == _RESULT:
        out.results.setdefault(phase, {})[seq] = _parse_result(payload)
    elif kind == _END:
        out.ended.add(phase)
    else:
        raise ValueError(f"unknown record type {kind}")


def _parse_result(payload: bytes) -> Logged:
    view = memoryview(payload)
    n = int.from_bytes(view[:4], "big")
    content_hex, voters, is_list = json.loads(bytes(view[4 : 4 + n]))
    pos = 4 + n
    count = int.from_bytes(view[pos : pos + 4], "big")
    if count > MAX_PARTS:
        raise ValueError("too many parts")
    pos += 4
    parts = []
    for _ in range(count):
        size = int.from_bytes(view[pos : pos + 8], "big")
        pos += 8
        if pos + size > len(view):
            raise ValueError("a part runs past its record")
        parts.append(bytes(view[pos : pos + size]))
        pos += size
    if not isinstance(voters, list) or not all(isinstance(v, str) for v in voters):
        raise TypeError("voters")
    return Logged(parts if is_list else parts[0], bytes.fromhex(content_hex), voters)


def _read_state(folder: Path) -> tuple[int, SeqSet] | None:
    try:
        state = json.loads((folder / STATE).read_bytes())
        number = state["checkpoint"]
        if type(number) is not int or not (folder / f"checkpoint-{number}" / "results").is_dir():
            return None
        return number, SeqSet.from_json(state["merged"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a crash
    write_synced(tmp, data)
    os.replace(tmp, path)
    sync_folder(path.parent)
