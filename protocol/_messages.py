"""The messages nodes exchange over a channel: a closed set of frozen dataclasses.

Each message has a type number and a version, and travels as a msgpack array
`[type, version, field, ...]` (the *head*). A message with a `Blob` field (a fragment's or
result's payload, a package chunk) carries a small blob inside the head; a blob over
`INLINE_BLOB` becomes its length in the head, and its bytes follow as the next record,
untouched by msgpack. Decoding checks every field's type and bound
(`_schema`); an unknown type or version is a `RemoteProtocolError`, never a crash.

The network these messages serve: a worker asks a chief for work with credits
(`WorkRequest`); the chief answers with `JobInfo` once per job, then `Fragment`s; the worker
fetches the package by content hash (`PackageRequest` / `PackageChunk`) and returns a
`Result` per fragment. A submitter sends `JobSubmit`, follows `JobStatus` and `JobEvent`, and
may `Cancel`. `Hello` opens every channel, `Heartbeat` keeps it alive, `Error` explains a
refusal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgpack

from ._compress import deflate, inflate
from ._envelope import JOB_ID_BYTES, MAX_PAYLOAD, Envelope, EnvelopeKind
from ._errors import RemoteProtocolError
from ._identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES
from ._schema import (
    INLINE_BLOB,
    U16,
    U32,
    U64,
    Blob,
    Choice,
    Flag,
    Invalid,
    Maybe,
    Nested,
    OptionMap,
    Raw,
    Real,
    Seq,
    Struct,
    Text,
    UInt,
    spec,
    struct,
)

HASH = Raw(32)
JOB_ID = Raw(JOB_ID_BYTES)
#: The largest chunk of a package a peer may ask for or send at once.
MAX_CHUNK = 4 * 2**20
MAX_CORES = 4096


class Task(StrEnum):
    """What a worker does with a fragment."""

    PROCESS = "process"  #: split/process/merge job: call process(fragment)
    MAP = "map"  #: MapReduce map task over a batch of source keys
    REDUCE = "reduce"  #: MapReduce reduce task over one partition


class JobKind(StrEnum):
    """The two kinds of job (docs/jobs.md)."""

    PACKAGE = "package"  #: a Split.py / Process.py / Merge.py folder
    SCRIPT = "script"  #: a MapReduce script (octo.py style)


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    FINISHING = "finishing"  #: every fragment merged; finalize / final running
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class EventKind(StrEnum):
    """What a `JobEvent` reports."""

    OUTPUT = "output"  #: text the job printed (final, merger, finalize)
    PROGRESS = "progress"
    WORKER_JOINED = "worker_joined"
    WORKER_LEFT = "worker_left"
    FRAGMENT_FAILED = "fragment_failed"
    WARNING = "warning"


class ErrorCode(IntEnum):
    """Codes an `Error` may carry. A newer peer may send a code not listed here."""

    BAD_MESSAGE = 1  #: well-formed but not valid here (wrong state, unknown job)
    UNSUPPORTED = 2  #: a feature this node does not have
    NOT_FOUND = 3  #: no such job, package or result
    REFUSED = 4  #: not allowed: a job breaking a rule, a peer not trusted
    NOT_DONATING = 5  #: work asked of a node whose owner switched donation off
    BUSY = 6  #: try again later
    JOB_FAILED = 7
    CANCELLED = 8
    INTERNAL = 9  #: a bug on the sending side


class Message(Struct):
    """Base of every message. `TYPE` and `VERSION` identify it on the wire."""

    TYPE: ClassVar[int]
    VERSION: ClassVar[int]
    _BLOB_PATH: ClassVar[tuple[int, ...] | None] = None
    _BLOB_KIND: ClassVar[Blob | None] = None
    _ENVELOPES: ClassVar[tuple[str, ...]] = ()  # fields holding an Envelope


M = TypeVar("M", bound=Message)
_REGISTRY: dict[tuple[int, int], type[Message]] = {}


def message(type_id: int, version: int = 1) -> Callable[[type[M]], type[M]]:
    """Register a dataclass as message `type_id` (apply above `@dataclass`)."""

    def register(cls: type[M]) -> type[M]:
        struct(cls)
        cls.TYPE, cls.VERSION = type_id, version
        for i, (_, kind) in enumerate(cls._SCHEMA):
            inner = kind.cls._SCHEMA if isinstance(kind, Nested) else ()
            for j, (_, sub) in enumerate(inner):
                if isinstance(sub, Blob):
                    cls._BLOB_PATH, cls._BLOB_KIND = (2 + i, j), sub
            if isinstance(kind, Blob):
                cls._BLOB_PATH, cls._BLOB_KIND = (2 + i,), kind
        cls._ENVELOPES = tuple(
            name for name, kind in cls._SCHEMA
            if isinstance(kind, Nested) and kind.cls is Envelope
        )
        if (type_id, version) in _REGISTRY:
            raise RuntimeError(f"message type {type_id} version {version} defined twice")
        _REGISTRY[type_id, version] = cls
        return cls

    return register


def message_types() -> list[type[Message]]:
    """Every registered message class, by type number."""
    return [cls for _, cls in sorted(_REGISTRY.items())]


def _require_envelope(envelope: Envelope, kind: EnvelopeKind, ref_bytes: int | None) -> None:
    if envelope.kind != kind:
        raise Invalid(f"envelope is a {envelope.kind.name}, expected {kind.name}")
    if ref_bytes is not None and len(envelope.ref) != ref_bytes:
        raise Invalid(f"envelope ref must be {ref_bytes} bytes")


@message(1)
@dataclasses.dataclass(frozen=True)
class Hello(Message):
    """The first message on every channel, both ways: who this node is and what it offers."""

    name: str = spec(Text(64))  #: a human name (the host name by default)
    software: str = spec(Text(64))  #: e.g. "octop2p 0.1.0"
    cores: int = spec(UInt(MAX_CORES))  #: cores this node donates while donating
    donating: bool = spec(Flag())
    features: tuple[str, ...] = spec(Seq(Text(32), 32), default=())
    sandbox: tuple[str, ...] = spec(Seq(Text(32), 16), default=())  #: layers it applies
    modules: tuple[str, ...] = spec(Seq(Text(100), 4096), default=())  #: for `requires`
    #: the TCP port this node accepts peers on (0: unknown); optional, so that a peer's
    #: address shows where it listens, not the source port of the link it dialled
    listen_port: int = spec(UInt(65535), default=0, optional=True)


@message(2)
@dataclasses.dataclass(frozen=True)
class Heartbeat(Message):
    """Sent periodically both ways; silence means the peer is gone (mDNS cannot tell)."""

    seq: int = spec(UInt(U64))
    donating: bool = spec(Flag())
    free_cores: int = spec(UInt(MAX_CORES))


@message(3)
@dataclasses.dataclass(frozen=True)
class WorkRequest(Message):
    """Worker to chief: room for `credits` more fragments (of `job_id`, or of any job)."""

    credits: int = spec(UInt(65536, low=1))
    job_id: bytes | None = spec(Maybe(JOB_ID), default=None)


@message(4)
@dataclasses.dataclass(frozen=True)
class JobInfo(Message):
    """Chief to worker, before the first fragment of a job: what it is, where its code is.

    `package` is the content hash of the tar to fetch; `submitter` and `package_signature`
    let the worker check the submitter's signature once it has the tar
    (`package_envelope`).
    """

    job_id: bytes = spec(JOB_ID)
    name: str = spec(Text(128))
    kind: JobKind = spec(Choice(JobKind))
    script: str | None = spec(Maybe(Text(255)))
    package: bytes = spec(HASH)
    package_size: int = spec(UInt(MAX_PAYLOAD))
    submitter: bytes = spec(Raw(PUBLIC_KEY_BYTES))
    package_signature: bytes = spec(Raw(SIGNATURE_BYTES))
    options: dict[str, Any] = spec(OptionMap(), default_factory=dict)

    def package_envelope(self, tar: bytes) -> Envelope:
        """The submitter's package envelope around `tar`, ready to `verify()`."""
        return Envelope(
            EnvelopeKind.PACKAGE, self.submitter, self.job_id, 0, b"",
            self.package_signature, tar,
        )


@message(5)
@dataclasses.dataclass(frozen=True)
class Fragment(Message):
    """Chief to worker: one fragment, signed by the chief; `envelope.ref` is the package."""

    task: Task = spec(Choice(Task))
    envelope: Envelope = spec(Nested(Envelope))

    def _validate(self) -> None:
        _require_envelope(self.envelope, EnvelopeKind.FRAGMENT, 32)


@struct
@dataclasses.dataclass(frozen=True)
class Failure(Struct):
    """Why a fragment failed: the rule it broke (if any), with where and the traceback."""

    message: str = spec(Text(4096))
    rule: str | None = spec(Maybe(Text(64)), default=None)
    traceback: str = spec(Text(65536), default="")
    file: str | None = spec(Maybe(Text(1024)), default=None)
    line: int | None = spec(Maybe(UInt(U32)), default=None)


@message(6)
@dataclasses.dataclass(frozen=True)
class Result(Message):
    """Worker to chief: the result of one fragment, signed by the worker.

    `envelope.seq` is the fragment's and `envelope.ref` the fragment envelope's `digest`.
    When `failure` is set the payload is empty and the fragment failed.
    """

    envelope: Envelope = spec(Nested(Envelope))
    out: str = spec(Text(262144), default="")  #: what the job printed
    cpu_seconds: float = spec(Real(0.0, 1e9), default=0.0)
    failure: Failure | None = spec(Maybe(Nested(Failure)), default=None)

    def _validate(self) -> None:
        _require_envelope(self.envelope, EnvelopeKind.RESULT, 32)
        if self.failure is not None and self.envelope.payload:
            raise Invalid("a failed fragment's result carries no payload")


@message(7)
@dataclasses.dataclass(frozen=True)
class PackageRequest(Message):
    """Ask for `length` bytes at `offset` of the content whose BLAKE2b-256 hash is `package`.

    Serves job packages (worker from chief) and result tarballs (submitter from chief).
    """

    package: bytes = spec(HASH)
    offset: int = spec(UInt(U64))
    length: int = spec(UInt(MAX_CHUNK, low=1))


@message(8)
@dataclasses.dataclass(frozen=True)
class PackageChunk(Message):
    """The answer to a `PackageRequest`: `data` at `offset` of content of `total` bytes."""

    package: bytes = spec(HASH)
    offset: int = spec(UInt(U64))
    total: int = spec(UInt(U64))
    data: bytes = spec(Blob(MAX_CHUNK))


@message(9)
@dataclasses.dataclass(frozen=True)
class JobSubmit(Message):
    """Submitter to chief: a job package (tar bytes in a PACKAGE envelope) and its options.

    The envelope's `job_id` is chosen by the submitter (16 random bytes), `seq` is 0 and
    `ref` empty; the package's content hash is `content_hash(package.payload)`.
    """

    package: Envelope = spec(Nested(Envelope))
    kind: JobKind = spec(Choice(JobKind))
    name: str = spec(Text(128))
    script: str | None = spec(Maybe(Text(255)), default=None)
    options: dict[str, Any] = spec(OptionMap(), default_factory=dict)

    def _validate(self) -> None:
        _require_envelope(self.package, EnvelopeKind.PACKAGE, 0)


@message(10)
@dataclasses.dataclass(frozen=True)
class StatusRequest(Message):
    """Ask for the `JobStatus` of one job, or of every job when `job_id` is None."""

    job_id: bytes | None = spec(Maybe(JOB_ID), default=None)


@message(11)
@dataclasses.dataclass(frozen=True)
class JobStatus(Message):
    """Where a job stands. When done, `results` is the content hash of the results tar.gz."""

    job_id: bytes = spec(JOB_ID)
    name: str = spec(Text(128))
    state: JobState = spec(Choice(JobState))
    fragments_done: int = spec(UInt(U64), default=0)
    fragments_failed: int = spec(UInt(U64), default=0)
    fragments_total: int | None = spec(Maybe(UInt(U64)), default=None)  #: None: not known yet
    workers: int = spec(UInt(U32), default=0)
    results: bytes | None = spec(Maybe(HASH), default=None)
    results_size: int | None = spec(Maybe(UInt(U64)), default=None)
    message: str = spec(Text(4096), default="")


@message(12)
@dataclasses.dataclass(frozen=True)
class JobEvent(Message):
    """Something that happened in a job, in order (`seq`), for the submitter to show."""

    job_id: bytes = spec(JOB_ID)
    seq: int = spec(UInt(U64))
    kind: EventKind = spec(Choice(EventKind))
    text: str = spec(Text(65536))


@message(13)
@dataclasses.dataclass(frozen=True)
class Cancel(Message):
    """Stop a job (submitter to chief), or stop working on it (chief to worker)."""

    job_id: bytes = spec(JOB_ID)
    reason: str = spec(Text(1024), default="")


@message(14)
@dataclasses.dataclass(frozen=True)
class Error(Message):
    """A refusal or failure, with a code (`ErrorCode`) and a reason for the user."""

    code: int = spec(UInt(U16))
    reason: str = spec(Text(4096))
    job_id: bytes | None = spec(Maybe(JOB_ID), default=None)
    seq: int | None = spec(Maybe(UInt(U64)), default=None)

    @property
    def error_code(self) -> ErrorCode | None:
        """`code` as an `ErrorCode`, or None for a code this version does not know."""
        try:
            return ErrorCode(self.code)
        except ValueError:
            return None


class PendingHead(NamedTuple):
    """A decoded message head waiting for its blob record (`blob_length` bytes).

    `inflated_length` is set when the blob record is deflated: its size once inflated.
    """

    cls: type[Message]
    raw: list[Any]
    blob_length: int | None
    inflated_length: int | None = None


def new_packer() -> msgpack.Packer:
    """A msgpack packer for `encode_message`; reusing one spares a 1 MiB buffer per call."""
    return msgpack.Packer(use_bin_type=True)


def message_blob_size(msg: Message) -> int:
    """The size of `msg`'s blob field (0 for a message without one)."""
    if msg._BLOB_PATH is None:
        return 0
    value: Any = msg
    for index in (msg._BLOB_PATH[0] - 2, *msg._BLOB_PATH[1:]):
        value = getattr(value, value._NAMES[index])
    return len(value)


def encode_message(
    msg: Message, packer: msgpack.Packer | None = None, *, compress: bool = False
) -> tuple[bytes, bytes | None]:
    """The head record of `msg`, and its blob (the next record) if it has one.

    With `compress`, a blob record is deflated when that pays (`_compress.deflate`); the
    head then holds `[inflated length, record length]` where the length would be.
    """
    blobs: list[bytes] = []
    raw = [msg.TYPE, msg.VERSION, *msg._encode_fields(blobs)]
    blob = blobs[0] if blobs else None
    if compress and blob is not None and (packed := deflate(blob)) is not None:
        assert msg._BLOB_PATH is not None
        *outer, last = msg._BLOB_PATH
        node = raw
        for index in outer:
            node = node[index]
        node[last] = [len(blob), len(packed)]
        blob = packed
    head: bytes = (packer or new_packer()).pack(raw)
    return head, blob


def decode_head(data: bytes, max_blob: int = MAX_PAYLOAD) -> PendingHead:
    """Read a head record; raise `RemoteProtocolError` if it is not a known message."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True, timestamp=0)
    except Exception as e:  # msgpack raises many exception types on malformed input
        raise RemoteProtocolError(f"a message is not valid msgpack ({type(e).__name__})") from None
    if type(raw) is not list or len(raw) < 2 or type(raw[0]) is not int or type(raw[1]) is not int:
        raise RemoteProtocolError("a message is not an array [type, version, ...]")
    cls = _REGISTRY.get((raw[0], raw[1]))
    if cls is None:
        raise RemoteProtocolError(f"unknown message type {raw[0]} version {raw[1]}")
    if not cls._REQUIRED <= len(raw) - 2 <= len(cls._SCHEMA):
        raise RemoteProtocolError(
            f"{cls.__name__} has {len(cls._SCHEMA)} fields, the peer sent {len(raw) - 2}"
        )
    length = inflated = None
    if cls._BLOB_PATH is not None and cls._BLOB_KIND is not None:
        node: Any = raw
        for index in cls._BLOB_PATH:
            node = node[index] if type(node) is list and index < len(node) else None
        limit = min(cls._BLOB_KIND.max_len, max_blob)
        if type(node) is list and len(node) == 2 and all(type(n) is int for n in node):
            # A deflated blob: both sizes are bounded here, before anything is allocated.
            inflated, length = node
            if not (INLINE_BLOB < inflated <= limit and 0 < length < inflated):
                raise RemoteProtocolError(
                    f"{cls.__name__} announces a compressed blob of {length} bytes "
                    f"inflating to {inflated} (the limit is {limit})"
                )
        elif type(node) is int:  # else an inline blob, or garbage that decoding will reject
            if not INLINE_BLOB < node <= limit:
                raise RemoteProtocolError(
                    f"{cls.__name__} announces a blob of {node} bytes (the limit is {limit})"
                )
            length = node
    return PendingHead(cls, raw, length, inflated)


def finish_message(pending: PendingHead, blob: bytes | None = None) -> Message:
    """Build the message from its head and blob; raise `RemoteProtocolError` if invalid."""
    if pending.inflated_length is not None and blob is not None:
        blob = inflate(blob, pending.inflated_length)
        assert pending.cls._BLOB_PATH is not None
        *outer, last = pending.cls._BLOB_PATH
        node = pending.raw
        for index in outer:
            node = node[index]
        node[last] = len(blob)  # the plain form, which the blob's kind checks as usual
    try:
        return pending.cls._decode_fields(pending.raw, 2, blob)
    except Invalid as e:
        raise RemoteProtocolError(f"invalid {pending.cls.__name__}: {e}") from None


def decode_message(head: bytes, blob: bytes | None = None) -> Message:
    """Decode what `encode_message` produced (both records at once)."""
    pending = decode_head(head)
    if (pending.blob_length is None) != (blob is None):
        raise RemoteProtocolError(f"{pending.cls.__name__}: blob record missing or unexpected")
    return finish_message(pending, blob)
