"""The sandboxed child: loads job code and serves one role over two pipes.

The fork server forks a child per (job, role) and calls :func:`serve` in it. The child
confines itself, imports the job's modules, says ``ready``, then answers requests until
its request pipe closes. Frames are described in docs/architecture.md. Job code runs
only here; every pickle the node hands over is unpickled only here.

Roles:
- ``split``: Split.py's ``splitter()`` (packages) or the script's ``source`` (scripts).
- ``work``: ``process`` (packages) or ``mapfn``/``combinefn``/``reducefn`` (scripts).
- ``merge``: ``merger``/``finalize`` (packages) or ``final`` (scripts).
"""

from __future__ import annotations

import ctypes
import errno
import importlib
import importlib.util
import io
import json
import linecache
import mmap
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from itertools import chain, starmap
from pathlib import Path
from types import ModuleType
from typing import Any

from . import _mapreduce
from ._keys import sorted_keys
from ._wire import read_message, write_message

REQUEST_FD = 3
REPLY_FD = 4
PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: Captured stdout/stderr returned with one reply; more is cut with a note.
OUT_LIMIT = 64 * 1024
#: A split reply goes back once it holds this much, so one frame stays small.
SPLIT_BATCH_BYTES = 1 << 20
SPLIT_BATCH_SECONDS = 0.05
#: A map task gathers source items up to this many bytes (or ``map_batch`` keys).
MAP_TASK_BYTES = 256 * 1024
MAP_TASK_KEYS = 64
#: A source whose size is known is cut into about this many map tasks (enough to keep
#: many workers busy and balanced), each between MAP_TASK_BYTES and MAP_TASK_MAX_BYTES:
#: larger tasks repeat fewer keys, so partitions and reduce work shrink.
MAP_TASKS_WANTED = 32
MAP_TASK_MAX_BYTES = 4 << 20
#: Address space a child keeps free to describe an error in (see `serve`).
ERROR_RESERVE = 4 << 20
_SANDBOX_DIR = str(Path(__file__).resolve().parent)

Send = Callable[[list[Any]], None]
_PR_SET_PDEATHSIG = 1
# Loaded once, when the fork server imports us: a child calls die_with_parent twice.
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class JobCodeError(Exception):
    """Raised by the runtime for a rule it checks itself (sizes, counts, shapes)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


# --- output capture --------------------------------------------------------------------


class _Capture(io.StringIO):
    """sys.stdout/sys.stderr of the child: text the job prints, returned with replies."""

    def __init__(self, stream: Send | None = None) -> None:
        super().__init__()
        self._stream = stream  # when set, text is streamed out in "output" frames

    def write(self, s: str) -> int:
        n = super().write(s)
        if self._stream is not None and self.tell() >= OUT_LIMIT:
            self._stream(["output", self.take()])
        return n

    def take(self) -> str:
        text = self.getvalue()
        self.seek(0)
        self.truncate()
        if self._stream is None and len(text) > OUT_LIMIT:
            text = text[:OUT_LIMIT] + f"\n[... {len(text) - OUT_LIMIT} more characters cut]\n"
        return text


# --- errors ------------------------------------------------------------------------------


def error_info(
    exc: BaseException, job_dir: str, limits: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Describe an exception from job code for the node: rule, message, user traceback."""
    from ._rules import describe_exception

    rule: str | None
    if isinstance(exc, JobCodeError):
        rule, message = exc.rule, str(exc)
    else:
        rule, message = describe_exception(exc, limits=limits)
    root = os.path.realpath(job_dir)
    frames = _user_frames(exc, root)
    file: str | None = None
    line: int | None = None
    for frame in reversed(frames):
        if _in_job(frame.filename, root):
            file, line = frame.filename, frame.lineno
            break
    if isinstance(exc, SyntaxError) and exc.filename:
        path = os.path.realpath(exc.filename)
        if path.startswith(root + os.sep):
            file, line = os.path.relpath(path, root), exc.lineno
    text = "Traceback (most recent call last):\n" if frames else ""
    text += "".join(traceback.format_list(frames))
    if not isinstance(exc, JobCodeError):
        # A JobCodeError's message is the error line the user sees; its class name
        # (sandbox._runtime.JobCodeError) would only be noise.
        text += "".join(traceback.format_exception_only(type(exc), exc))
    return {"rule": rule, "message": message, "traceback": text, "file": file, "line": line}


def _in_job(filename: str, root: str) -> bool:
    """True for a frame's file name made relative to the job's folder (see below)."""
    return not os.path.isabs(filename) and not filename.startswith("<")


def _user_frames(exc: BaseException, root: str) -> list[traceback.FrameSummary]:
    """The frames the user can act on: from the first one in the job's own files on,
    without the runtime's own, with the job's files named relative to its folder (the
    child runs a copy in a temporary or cache folder the user never sees)."""
    frames: list[traceback.FrameSummary] = []
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(_SANDBOX_DIR) or "<frozen importlib" in frame.filename:
            continue
        if os.path.isabs(frame.filename):
            path = os.path.realpath(frame.filename)
            if path.startswith(root + os.sep):
                # The unstripped line: the ~~^~~ markers count columns from its start.
                raw = linecache.getline(frame.filename, frame.lineno or 0) or frame.line
                frame = traceback.FrameSummary(
                    os.path.relpath(path, root), frame.lineno, frame.name, line=raw,
                    end_lineno=frame.end_lineno, colno=frame.colno, end_colno=frame.end_colno,
                )
        # "<string>": code from exec() (a pickle's payload, say) has no file of the job.
        if frames or _in_job(frame.filename, root):
            frames.append(frame)
    return frames


def _system_refused(command: object) -> int:
    """os.system in a confined child: refused, as every new process is.

    Under seccomp the C system() fails and os.system quietly returns -1, so a job that
    ignores the status (most do) would go on as if its command had run. Raising names
    the rule at the job's own line instead.
    """
    raise PermissionError(errno.EPERM, "os.system() cannot start a process in a job")


# --- loading job code --------------------------------------------------------------------


def _load_script(job_dir: str, script: str) -> ModuleType:
    """Import a MapReduce script under a name that is the same in every child."""
    stem = Path(script).stem
    taken = stem in sys.modules or stem in sys.stdlib_module_names or not stem.isidentifier()
    name = "octop2p_job" if taken else stem
    spec = importlib.util.spec_from_file_location(name, os.path.join(job_dir, script))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickle must find classes the script defines
    spec.loader.exec_module(module)
    return module


def _attr(module: ModuleType, name: str, file: str) -> Any:
    try:
        return getattr(module, name)
    except AttributeError:
        raise JobCodeError("required functions", f"{file} defines no {name}") from None


# --- roles -------------------------------------------------------------------------------


class SplitRole:
    """Pulls fragments from ``splitter()``, or map tasks from a script's ``source``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        limits = spec["limits"]
        self.fragment_bytes: int = limits["fragment_bytes"]
        self.max_fragments: int = limits["max_fragments"]
        self.count = 0
        if spec["kind"] == "package":
            split = importlib.import_module("Split")
            self.items = iter(_attr(split, "splitter", "Split.py")())
            self.source = None
        else:
            module = _load_script(spec["job_dir"], spec["script"])
            self.source = _attr(module, "source", spec["script"])
            self.items = iter(self.source)
            self.map_batch: int | None = spec["options"].get("map_batch")
            self.source_keys = _mapreduce.length(self.source)
            self.seen_keys = self.seen_bytes = 0
        self.exhausted = False

    def _task_limits(self) -> tuple[int, int]:
        """Keys and bytes for the next map task, sized to the source when its size is known.

        A lazy source without ``len()`` gets small tasks; otherwise its size is estimated
        from the items read so far, and the tasks aim at MAP_TASKS_WANTED of them.
        """
        if self.source_keys is None or not self.seen_keys:
            return self.map_batch or MAP_TASK_KEYS, MAP_TASK_BYTES
        keys = self.map_batch or max(1, -(-self.source_keys // MAP_TASKS_WANTED))
        estimate = self.seen_bytes / self.seen_keys * self.source_keys / MAP_TASKS_WANTED
        # A quarter of fragment_bytes leaves room for what the size guess misses.
        ceiling = max(MAP_TASK_BYTES, min(MAP_TASK_MAX_BYTES, self.fragment_bytes // 4))
        return keys, int(min(max(estimate, MAP_TASK_BYTES), ceiling))

    def _next_fragment(self) -> bytes | None:
        if self.source is None:
            try:
                item = next(self.items)
            except StopIteration:
                return None
            return pickle.dumps(item, PICKLE_PROTOCOL)
        # A map task: a batch of (key, value) pairs read from the source.
        batch: list[tuple[Any, Any]] = []
        size = 0
        max_keys, max_bytes = self._task_limits()
        for key in self.items:
            value = self.source[key]
            batch.append((key, value))
            size += len(value) if isinstance(value, (str, bytes)) else 64
            if len(batch) >= max_keys or size >= max_bytes:
                break
        self.seen_keys += len(batch)
        self.seen_bytes += size
        return pickle.dumps(batch, PICKLE_PROTOCOL) if batch else None

    def handle(self, msg: list[Any], send: Send, out: _Capture) -> None:
        if msg[0] != "next":
            raise JobCodeError("protocol", f"a split child cannot do {msg[0]!r}")
        wanted = int(msg[1])
        fragments: list[bytes] = []
        size = 0
        started = time.monotonic()
        while not self.exhausted and len(fragments) < wanted:
            data = self._next_fragment()
            if data is None:
                self.exhausted = True
                break
            seq, self.count = self.count, self.count + 1  # fragments count from 0
            if len(data) > self.fragment_bytes:
                raise JobCodeError(
                    "fragment size",
                    f"fragment {seq} is {len(data)} bytes; "
                    f"this job's limit is {self.fragment_bytes}",
                )
            if self.count > self.max_fragments:
                raise JobCodeError(
                    "finite splitter",
                    f"the splitter produced more than {self.max_fragments} fragments "
                    "(max_fragments); a splitter must be finite",
                )
            fragments.append(data)
            size += len(data)
            if size >= SPLIT_BATCH_BYTES or time.monotonic() - started > SPLIT_BATCH_SECONDS:
                break
        send(["fragments", fragments, self.exhausted, out.take()])


class WorkRole:
    """Runs ``process`` on fragments, or ``mapfn``/``reducefn`` on MapReduce tasks."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.result_bytes: int = spec["limits"]["fragment_bytes"]
        if spec["kind"] == "package":
            self.process = _attr(importlib.import_module("Process"), "process", "Process.py")
            return
        module = _load_script(spec["job_dir"], spec["script"])
        self.mapfn = _attr(module, "mapfn", spec["script"])
        self.reducefn = _attr(module, "reducefn", spec["script"])
        self.combinefn = getattr(module, "combinefn", None)
        self.partitions: int = spec["options"]["partitions"]
        self._partition_cache: dict[Any, int] = {}

    def handle(self, msg: list[Any], send: Send, out: _Capture) -> None:
        kind = msg[0]
        if kind == "process":
            for seq, data in msg[1]:
                self.current_seq = seq
                result = pickle.dumps(self.process(pickle.loads(data)), PICKLE_PROTOCOL)
                if len(result) > self.result_bytes:
                    raise JobCodeError(
                        "result size",
                        f"the result of fragment {seq} is {len(result)} bytes; "
                        f"this job's limit is {self.result_bytes} (fragment_bytes)",
                    )
                send(["result", seq, result, out.take()])
        elif kind == "map":
            for seq, data in msg[1]:
                self.current_seq = seq
                send(["mapped", seq, self._map(pickle.loads(data)), out.take()])
        elif kind == "reduce":
            send(["reduced", msg[1], self._reduce(msg[2]), out.take()])
        else:
            raise JobCodeError("protocol", f"a work child cannot do {kind!r}")

    def _map(self, pairs: list[tuple[Any, Any]]) -> list[bytes]:
        """One map task: R pickled partitions of runs (see `_mapreduce`)."""
        items = chain.from_iterable(starmap(self.mapfn, pairs))
        return _mapreduce.mapped(items, _as_pair, self.partitions, self._partition_cache,
                                 self.combinefn)

    def _reduce(self, parts: list[bytes]) -> bytes:
        return _mapreduce.reduced(parts, self.reducefn)


class MergeRole:
    """Runs ``merger``/``finalize`` into results_dir, or a script's ``final``."""

    def __init__(self, spec: dict[str, Any], send: Send) -> None:
        self.results_dir = Path(spec["results_dir"])
        self.send = send
        if spec["kind"] == "package":
            merge = importlib.import_module("Merge")
            self.merger = _attr(merge, "merger", "Merge.py")
            self.finalize = getattr(merge, "finalize", None)
            self.final = None
        else:
            module = _load_script(spec["job_dir"], spec["script"])
            self.final = getattr(module, "final", None) or _print_json_line

    def handle(self, msg: list[Any], send: Send, out: _Capture) -> None:
        kind = msg[0]
        if kind == "merge":
            last = None
            for seq, data in msg[1]:
                self.current_seq = seq
                self.merger(pickle.loads(data), self.results_dir)
                last = seq
            send(["merged", last, out.take()])
        elif kind == "finalize":
            if self.finalize is not None:
                self.finalize(self.results_dir)
            send(["finalized", out.take()])
        elif kind == "final":
            # Each partition arrives sorted, but keys are sorted again across all of
            # them: final() sees every key once, in one global order.
            by_key = {k: v for data in msg[1] for k, v in pickle.loads(data)}
            assert self.final is not None  # a script's merge child always has one
            for k in sorted_keys(by_key):
                self.final(k, by_key[k])
            send(["finaled", out.take()])
        else:
            raise JobCodeError("protocol", f"a merge child cannot do {kind!r}")


def _as_pair(item: Any) -> tuple[Any, Any]:
    """One (key, value) pair from mapfn's output, or a clear error."""
    try:
        k, v = item
    except (TypeError, ValueError):
        raise JobCodeError(
            "mapfn output", f"mapfn must yield (key, value) pairs; it yielded {item!r:.80}"
        ) from None
    return k, v


def _print_json_line(key: Any, value: Any) -> None:
    """Default ``final``: one JSON line ``[key, value]``, repr for what JSON cannot hold."""
    print(json.dumps([key, value], default=repr, ensure_ascii=False))


# --- the child's main loop ---------------------------------------------------------------


def _prepare(spec: dict[str, Any]) -> None:
    """Make the process a job child: environment, folder, limits, confinement."""
    from ._confine import clean_environ, confine
    from ._policy import Policy

    limits = spec["limits"]
    os.environ.clear()
    os.environ.update(clean_environ(limits.get("threads", 1)))
    os.chdir(spec["job_dir"])
    sys.path.insert(0, spec["job_dir"])
    sys.argv = [spec.get("script") or spec["job_dir"]]
    sys.dont_write_bytecode = True  # the job folder is read-only
    # Room for the runtime's own frames below the job's recursion budget.
    sys.setrecursionlimit(int(limits["recursion_depth"]) + 50)
    ppid = os.getppid()
    policy = Policy.from_dict(spec["policy"])
    confine(policy)
    if "seccomp" in policy.layers:
        os.system = _system_refused
    # Entering a user namespace clears the parent-death signal: set it again.
    die_with_parent()
    if os.getppid() != ppid:
        raise SystemExit(0)


def serve(spec: dict[str, Any], rfd: int = REQUEST_FD, wfd: int = REPLY_FD) -> int:
    """Serve one role until the request pipe closes; returns the exit code."""

    def send(message: list[Any]) -> None:
        write_message(wfd, message)

    out = _Capture(send if spec["role"] == "merge" and spec["kind"] == "script" else None)
    # Room to report an error in. After a MemoryError the job's objects may still hold
    # all the address space its limit allows (in a traceback's frames, in globals), and
    # describing the error needs memory too: without this the child died unheard.
    # Mapped before confine(), so it is not taken from the job's memory_mb, and never
    # touched, so it costs address space only.
    reserve = mmap.mmap(-1, ERROR_RESERVE)
    try:
        _prepare(spec)
        sys.stdout = sys.stderr = out
        role: Any
        if spec["role"] == "split":
            role = SplitRole(spec)
        elif spec["role"] == "work":
            role = WorkRole(spec)
        elif spec["role"] == "merge":
            role = MergeRole(spec, send)
        else:
            raise JobCodeError("protocol", f"unknown role {spec['role']!r}")
    except BaseException as exc:  # noqa: BLE001 - every failure is reported, then we exit
        reserve.close()
        info = error_info(exc, spec["job_dir"], spec.get("limits"))
        info["out"] = out.take()  # what the job printed while it was imported
        send(["error", None, info])
        return 1
    send(["ready", {"pid": os.getpid(), "out": out.take()}])
    while True:
        try:
            msg = read_message(rfd)
        except EOFError:
            return 0
        if msg[0] == "exit":
            return 0
        try:
            role.handle(msg, send, out)
        except BaseException as exc:  # noqa: BLE001
            reserve.close()
            seq = getattr(role, "current_seq", None)
            if msg[0] == "reduce":
                seq = msg[1]
            info = error_info(exc, spec["job_dir"], spec.get("limits"))
            info["out"] = out.take()
            send(["error", seq, info])
            return 1

